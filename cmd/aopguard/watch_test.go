package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReloadLoopSerializesTriggers: SIGHUPs and change checks arrive from
// two goroutines while the configuration is rewritten; the one reload
// loop applies them one at a time (the reload log lines never
// interleave), and once the writes stop the running configuration is the
// last one written, never an older one that a slower trigger read.
func TestReloadLoopSerializesTriggers(t *testing.T) {
	p := newPKI(t)
	body := func(n int) string {
		return fmt.Sprintf("upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\nready_min_requests: %d\n", n)
	}
	cfgPath := writeConfig(t, p.dir, body(1))
	f := &flags{configFile: cfgPath, set: map[string]bool{}}
	var logs syncBuffer
	a, _ := appFor(t, cfgPath, &logs)
	r := newReloader()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx, a, f); close(done) }()

	const last = 60
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, force := range []bool{true, false} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					r.request(force, "test")
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	for n := 2; n <= last; n++ {
		writeConfig(t, p.dir, body(n))
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// One more check after the last write: it must see the last content.
	for a.config().ReadyMinRequests != last {
		r.request(false, "final")
		select {
		case <-r.tried:
		case <-time.After(10 * time.Second):
			t.Fatalf("running ready_min_requests %d, want %d", a.config().ReadyMinRequests, last)
		}
	}
	cancel()
	<-done
	depth := 0
	for _, l := range bytes.Split([]byte(logs.String()), []byte("\n")) {
		switch {
		case bytes.Contains(l, []byte(`"message":"reloading configuration"`)):
			depth++
		case bytes.Contains(l, []byte(`"message":"reload complete"`)), bytes.Contains(l, []byte(`"message":"reload failed; still serving the previous configuration"`)):
			depth--
		}
		if depth < 0 || depth > 1 {
			t.Fatalf("reloads overlapped:\n%s", logs.String())
		}
	}
}
