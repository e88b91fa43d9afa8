// Package logbuf batches log lines into fewer writes. On a busy proxy the
// access line is written once per request, and one write system call per
// line costs about as much CPU as parsing the request; a Writer collects
// lines in a bounded buffer and writes them out together, like nginx's
// "access_log ... buffer=... flush=...".
//
// What a crash can lose: the lines of the last flush interval (at most
// the buffer's size). Lines at warn level and above are written at once,
// together with everything buffered before them, so an error is never
// held back and never reordered; Close writes out the rest.
package logbuf

import (
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Writer is a zerolog.LevelWriter that buffers lines below warn level for
// at most its flush interval and its buffer size, whichever comes first.
// It is safe for concurrent use.
type Writer struct {
	w        io.Writer
	size     int
	interval time.Duration

	mu     sync.Mutex
	buf    []byte
	armed  bool // the flush timer runs
	timer  *time.Timer
	closed bool
}

// New returns a Writer that writes to w in batches of at most size bytes,
// each line at most interval after it was logged. An interval of zero or
// less disables buffering: every line is written as it comes.
func New(w io.Writer, size int, interval time.Duration) *Writer {
	b := &Writer{w: w, size: size, interval: interval}
	if interval > 0 && size > 0 {
		b.buf = make([]byte, 0, size)
		b.timer = time.AfterFunc(time.Hour, b.tick)
		b.timer.Stop()
	}
	return b
}

// Write buffers p, a whole log line, or writes it through when buffering
// is off, the Writer is closed, or p does not fit an empty buffer.
func (b *Writer) Write(p []byte) (int, error) {
	return b.write(p, false)
}

// WriteLevel is Write for zerolog: lines at warn level and above flush the
// buffer and are written at once.
func (b *Writer) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	return b.write(p, l >= zerolog.WarnLevel && l != zerolog.NoLevel)
}

func (b *Writer) write(p []byte, now bool) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer == nil || b.closed {
		return b.w.Write(p)
	}
	if len(b.buf)+len(p) > b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > b.size {
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	if now {
		return len(p), b.flushLocked()
	}
	if !b.armed {
		b.armed = true
		b.timer.Reset(b.interval)
	}
	return len(p), nil
}

// tick is the flush timer: it writes out what the interval collected.
func (b *Writer) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.flushLocked()
}

func (b *Writer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0] // a failed write is not retried: the lines are dropped, as unbuffered they would be
	return err
}

// Flush writes out the buffered lines.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// Close writes out the buffered lines; later lines are written as they
// come. It is the last thing to call before the process exits.
func (b *Writer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.closed = true
	return b.flushLocked()
}
