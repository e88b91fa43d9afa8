package h1

import (
	"context"
	"errors"
	"testing"
)

// TestConnCtx: the connection context behaves as context.AfterFunc on a
// cancellable context would, for the one interrupt slot and beyond it.
func TestConnCtx(t *testing.T) {
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")

	c := newConnCtx(parent)
	if c.Value(key{}) != "v" || c.Err() != nil {
		t.Fatalf("fresh: value %v, err %v", c.Value(key{}), c.Err())
	}
	fired := 0
	stop := afterDone(c, func() { fired++ })
	if !stop() || fired != 0 {
		t.Errorf("stop before cancel: fired %d", fired)
	}
	stop = afterDone(c, func() { fired++ })
	second := make(chan struct{})
	stop2 := afterDone(c, func() { close(second) }) // the slot is taken: context.AfterFunc
	done := c.Done()
	c.cancel()
	<-second
	if fired != 1 || stop() || stop2() {
		t.Errorf("after cancel: fired %d; stops must report it fired", fired)
	}
	select {
	case <-done:
	default:
		t.Error("Done not closed by cancel")
	}
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err %v", c.Err())
	}
	if stop := afterDone(c, func() { fired++ }); stop() || fired != 2 {
		t.Errorf("registered after cancel: fired %d, want it run at once", fired)
	}
	c.cancel() // twice is harmless
	if stop := afterDone(context.Background(), func() {}); stop != nil {
		t.Error("a context that is never done got a stop func")
	}
}
