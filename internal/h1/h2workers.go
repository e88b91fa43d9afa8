package h1

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// net/http's HTTP/2 server runs every stream's handler on a new
// goroutine. Its stack starts small and is copied each time it doubles on
// the way through the proxy to the upstream write: 5 % of an HTTP/2
// request's CPU. So handlers run on workers, goroutines kept between
// streams whose stacks have grown already. The stream's goroutine waits
// for its worker and returns only when the handler has, so the
// ResponseWriter is used only while ServeHTTP runs, as net/http requires;
// a panic is raised again on the stream's goroutine, where net/http
// handles it (http.ErrAbortHandler resets the stream).

// maxIdleWorkers bounds the workers kept waiting for a stream; a worker
// finishing while as many wait ends. The garbage collector shrinks the
// stacks of those that wait long.
const maxIdleWorkers = 128

// workerTrimEvery is how often the workers that were not needed are let
// go: as many as always waited since the last look. After a burst the pool
// shrinks back within two periods.
const workerTrimEvery = 5 * time.Second

// h2workers is a Server's pool of idle workers.
type h2workers struct {
	idle   chan *h2worker
	closed atomic.Bool
	// spare is the fewest workers that waited at once since the last
	// trim: that many were not needed.
	spare     atomic.Int64
	trimming  atomic.Bool // a trim is due
	trimEvery time.Duration
}

// h2worker runs one handler at a time, sent on jobs; done carries how it
// ended (nil, or the panic to raise again). done is unbuffered: the worker
// goes back to the pool only once its stream has taken the result, which
// the next stream to take the worker would otherwise be able to take.
type h2worker struct {
	jobs chan h2job
	done chan any
}

type h2job struct {
	h http.Handler
	w http.ResponseWriter
	r *http.Request
}

// errGoexit stands for a handler that called runtime.Goexit.
var errGoexit = errors.New("h1: handler called runtime.Goexit")

// workerPanic is a handler's panic (other than http.ErrAbortHandler) with
// the worker's stack, which the stream goroutine's would not show.
type workerPanic struct {
	val   any
	stack []byte
}

func (p workerPanic) String() string { return fmt.Sprintf("%v\n%s", p.val, p.stack) }

func newH2workers() *h2workers {
	return &h2workers{idle: make(chan *h2worker, maxIdleWorkers), trimEvery: workerTrimEvery}
}

// serve runs h for the stream on an idle worker, or on a new one, and
// returns when it has finished.
func (p *h2workers) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	if p.closed.Load() {
		h.ServeHTTP(w, r)
		return
	}
	var wk *h2worker
	select {
	case wk = <-p.idle:
	default:
		wk = &h2worker{jobs: make(chan h2job), done: make(chan any)}
		go p.loop(wk)
	}
	for n := int64(len(p.idle)); ; {
		if s := p.spare.Load(); n >= s || p.spare.CompareAndSwap(s, n) {
			break
		}
	}
	wk.jobs <- h2job{h, w, r}
	switch v := <-wk.done; v {
	case nil:
	case errGoexit:
		runtime.Goexit()
	default:
		panic(v)
	}
}

func (p *h2workers) loop(wk *h2worker) {
	for j := range wk.jobs {
		wk.done <- wk.run(j)
		if p.closed.Load() {
			return
		}
		select {
		case p.idle <- wk:
		default:
			return // enough wait already
		}
		if p.closed.Load() {
			p.drain() // closed while this one went back: not left waiting
		}
		p.armTrim()
	}
}

// armTrim schedules a trim unless one is due already.
func (p *h2workers) armTrim() {
	if p.trimming.CompareAndSwap(false, true) {
		p.spare.Store(int64(len(p.idle)))
		time.AfterFunc(p.trimEvery, p.trim)
	}
}

// trim ends the workers that were not needed since the last trim, and
// schedules the next while any wait.
func (p *h2workers) trim() {
	for n := p.spare.Load(); n > 0; n-- {
		select {
		case wk := <-p.idle:
			close(wk.jobs)
		default:
			n = 0
		}
	}
	p.trimming.Store(false)
	if len(p.idle) > 0 && !p.closed.Load() {
		p.armTrim()
	}
}

// run runs a job and returns how it ended.
func (wk *h2worker) run(j h2job) (ended any) {
	finished := false
	defer func() {
		if finished {
			return
		}
		if ended = recover(); ended == nil {
			// runtime.Goexit: this goroutine ends after the deferred
			// calls, so the loop will not report it.
			wk.done <- errGoexit
			return
		}
		if ended != http.ErrAbortHandler {
			ended = workerPanic{ended, debug.Stack()}
		}
	}()
	j.h.ServeHTTP(j.w, j.r)
	finished = true
	return nil
}

// close ends the idle workers, and each busy one when its handler returns.
func (p *h2workers) close() {
	p.closed.Store(true)
	p.drain()
}

func (p *h2workers) drain() {
	for {
		select {
		case wk := <-p.idle:
			close(wk.jobs)
		default:
			return
		}
	}
}
