package h1

import (
	"context"
	"sync"
)

// connCtx is the context of an HTTP/1.1 connection's requests: its
// parent's values, cancelled only when the client went away (which ends
// the connection). It costs nothing per request: no cancellable context
// per request, and the transport registers the interrupt of its wait for
// the app in a slot (setInterrupt) rather than through context.AfterFunc,
// which allocates for every request and keeps a map of children on the
// connection.
type connCtx struct {
	context.Context // the parent: values only

	mu        sync.Mutex
	done      chan struct{} // made when first asked for
	err       error
	interrupt func()      // the transport's, while it waits on the app
	clear     func() bool // clearInterrupt, made once
}

func newConnCtx(parent context.Context) *connCtx {
	c := &connCtx{Context: parent}
	c.clear = c.clearInterrupt
	return c
}

// connCtxKey finds a request's connCtx among its context's values.
type connCtxKey struct{}

func (c *connCtx) Value(k any) any {
	if k == (connCtxKey{}) {
		return c
	}
	return c.Context.Value(k)
}

func (c *connCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *connCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// cancel marks the client gone and interrupts the wait for the app.
func (c *connCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	f := c.interrupt
	c.interrupt = nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

// setInterrupt registers f to run if the client goes away, and returns
// what disarms it (false: f has run or is running), as context.AfterFunc
// does; ok is false when the slot is taken (use context.AfterFunc then).
func (c *connCtx) setInterrupt(f func()) (stop func() bool, ok bool) {
	c.mu.Lock()
	if c.interrupt != nil {
		c.mu.Unlock()
		return nil, false
	}
	if c.err != nil {
		c.mu.Unlock()
		f()
		return stopFired, true
	}
	c.interrupt = f
	c.mu.Unlock()
	return c.clear, true
}

func (c *connCtx) clearInterrupt() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	armed := c.interrupt != nil
	c.interrupt = nil
	return armed
}

func stopFired() bool { return false }

// afterDone runs f once ctx is done, and returns what disarms it (false:
// f has run or is running), or nil for a context that is never done; for
// a connection's context without allocating.
func afterDone(ctx context.Context, f func()) func() bool {
	if cc, ok := ctx.Value(connCtxKey{}).(*connCtx); ok {
		if stop, ok := cc.setInterrupt(f); ok {
			return stop
		}
	}
	if ctx.Done() == nil {
		return nil
	}
	return context.AfterFunc(ctx, f)
}
