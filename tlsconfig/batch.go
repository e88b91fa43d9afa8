package tlsconfig

import (
	"sync"
)

// crypto/tls writes every record with its own write(2): a 1 MiB response
// is 64 of them, each also waking the peer's network stack. Conn.Write
// gathers the records of one large write and hands them to the socket
// batchCap bytes at a time. Nothing stays buffered once Write returns, so
// framing, deadlines and errors are those of an unbatched write; the
// buffer is held only during the write, never by an idle connection.

const (
	// recordPayload is the most plaintext crypto/tls puts in one record:
	// a write this long or shorter is one record, with nothing to batch.
	recordPayload = 16 << 10
	// batchCap holds four full records with their overhead (header,
	// content type, AEAD tag).
	batchCap = 4 * (recordPayload + 256)
)

var batchBufs = sync.Pool{New: func() any { return new([batchCap]byte) }}

// recordBatch is the state of a trackedConn's gathered writes.
type recordBatch struct {
	mu    sync.Mutex
	buf   []byte // non-nil while a batching Write is in progress
	users int    // batching Writes in progress
}

// Write sends p, a record crypto/tls wrote, to the socket, or adds it to
// the batch while a large Conn.Write is in progress. crypto/tls writes
// records one at a time (under its own lock), so appending and flushing
// here, in that order, keeps them in order.
func (t *trackedConn) Write(p []byte) (int, error) {
	b := &t.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return t.Conn.Write(p)
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := t.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.buf) {
			return t.Conn.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (t *trackedConn) flushLocked() error {
	b := &t.batch
	if len(b.buf) == 0 {
		return nil
	}
	_, err := t.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Write encrypts p and sends it; a p of more than one record goes to the
// socket in batches of records rather than a write(2) per record.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) <= recordPayload {
		return c.Conn.Write(p)
	}
	t, b := c.t, &c.t.batch
	b.mu.Lock()
	if b.buf == nil {
		b.buf = batchBufs.Get().(*[batchCap]byte)[:0]
	}
	b.users++
	b.mu.Unlock()

	n, err := c.Conn.Write(p)

	b.mu.Lock()
	b.users--
	ferr := t.flushLocked()
	if b.users == 0 {
		batchBufs.Put((*[batchCap]byte)(b.buf[:batchCap]))
		b.buf = nil
	}
	b.mu.Unlock()
	if err == nil && ferr != nil {
		// crypto/tls counted as sent what the socket refused.
		return 0, ferr
	}
	return n, err
}
