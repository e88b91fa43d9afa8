package h1

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestH2workers: a handler runs on a worker that is kept for the next
// stream; how it ends reaches the stream's goroutine: a panic is raised
// there again (with the worker's stack, except http.ErrAbortHandler), a
// runtime.Goexit ends it too; and close ends the idle workers.
func TestH2workers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		check   func(t *testing.T, rec *httptest.ResponseRecorder, p any, goexit bool)
		kept    bool // the worker waits for the next stream afterwards
	}{
		{"answers", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
			func(t *testing.T, rec *httptest.ResponseRecorder, p any, goexit bool) {
				if p != nil || goexit || rec.Body.String() != "ok" {
					t.Errorf("panic %v, goexit %v, body %q; want none, false, ok", p, goexit, rec.Body)
				}
			}, true},
		{"aborts", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) },
			func(t *testing.T, rec *httptest.ResponseRecorder, p any, goexit bool) {
				if p != http.ErrAbortHandler {
					t.Errorf("panic %v, want http.ErrAbortHandler as it was", p)
				}
			}, true},
		{"panics", func(w http.ResponseWriter, r *http.Request) { panic("broken handler") },
			func(t *testing.T, rec *httptest.ResponseRecorder, p any, goexit bool) {
				wp, ok := p.(workerPanic)
				if !ok || wp.val != "broken handler" || !strings.Contains(wp.String(), "TestH2workers") {
					t.Errorf("panic %v, want the handler's value with the worker's stack", p)
				}
			}, true},
		{"goexit", func(w http.ResponseWriter, r *http.Request) { runtime.Goexit() },
			func(t *testing.T, rec *httptest.ResponseRecorder, p any, goexit bool) {
				if !goexit || p != nil {
					t.Errorf("goexit %v, panic %v; want the stream's goroutine ended too", goexit, p)
				}
			}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newH2workers()
			for range 2 {
				rec := httptest.NewRecorder()
				var caught any
				goexit := true
				done := make(chan struct{})
				go func() { // as net/http runs a stream's handler
					defer close(done)
					defer func() { caught = recover() }()
					p.serve(http.HandlerFunc(tc.handler), rec, httptest.NewRequest("GET", "/", nil))
					goexit = false
				}()
				<-done
				if caught != nil {
					goexit = false
				}
				tc.check(t, rec, caught, goexit)
				if tc.kept {
					waitFor(t, "the worker back in the pool", func() bool { return len(p.idle) == 1 })
				}
			}
			if !tc.kept && len(p.idle) != 0 {
				t.Errorf("%d idle workers after a Goexit, want 0", len(p.idle))
			}
			p.close()
			if len(p.idle) != 0 {
				t.Errorf("%d idle workers after close", len(p.idle))
			}
			// After close, handlers run on the stream's goroutine.
			rec := httptest.NewRecorder()
			p.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "late") }), rec, httptest.NewRequest("GET", "/", nil))
			if rec.Body.String() != "late" {
				t.Errorf("after close: body %q", rec.Body)
			}
		})
	}
}

// TestH2workersConcurrent: with many streams sharing the pool, a stream
// returns only once its own handler has finished (never on another's
// result), and every handler runs once. finished is a plain bool on
// purpose: a stream that returned on another's result reads it without
// ordering, which the race detector (make test) reports even when the
// value happens to be set.
func TestH2workersConcurrent(t *testing.T) {
	p := newH2workers()
	defer p.close()
	var wg sync.WaitGroup
	var ran atomic.Int64
	for range 32 {
		wg.Go(func() {
			for range 200 {
				finished := false
				p.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ran.Add(1)
					finished = true
				}), nil, nil)
				if !finished {
					t.Error("a stream returned before its handler finished")
					return
				}
			}
		})
	}
	wg.Wait()
	if n := ran.Load(); n != 32*200 {
		t.Errorf("%d handlers ran, want %d", n, 32*200)
	}
}

// TestH2workersTrim: after a burst, the workers no stream needs end within
// two trim periods, and the pool serves on.
func TestH2workersTrim(t *testing.T) {
	p := newH2workers()
	p.trimEvery = 20 * time.Millisecond
	defer p.close()
	release := make(chan struct{})
	var started, wg sync.WaitGroup
	started.Add(8)
	for range 8 {
		wg.Go(func() {
			p.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started.Done()
				<-release
			}), nil, nil)
		})
	}
	started.Wait() // eight workers, each busy
	if n := workerLoops(); n < 8 {
		t.Fatalf("%d workers for 8 concurrent streams", n)
	}
	close(release)
	wg.Wait()
	waitFor(t, "the workers no stream needs to end", func() bool { return workerLoops() == 0 })
	rec := httptest.NewRecorder()
	p.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "after") }), rec, nil)
	if rec.Body.String() != "after" {
		t.Fatalf("after the trim: body %q", rec.Body)
	}
}

// workerLoops counts the goroutines running a worker's loop.
func workerLoops() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "internal/h1.(*h2workers).loop(")
}
