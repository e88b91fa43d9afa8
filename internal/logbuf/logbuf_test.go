package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// sink records each write it gets.
type sink struct {
	mu     sync.Mutex
	writes []string
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(p))
	return len(p), nil
}

func (s *sink) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.writes...)
}

func TestWriter(t *testing.T) {
	type line struct {
		level zerolog.Level
		text  string
	}
	info := func(s string) line { return line{zerolog.InfoLevel, s} }
	tests := []struct {
		name     string
		size     int
		interval time.Duration
		lines    []line
		want     []string // writes before Close
	}{
		{"buffered until flush", 64, time.Hour, []line{info("a\n"), info("b\n")}, nil},
		{"warn flushes what came before, in order", 64, time.Hour,
			[]line{info("a\n"), {zerolog.WarnLevel, "w\n"}, info("b\n")}, []string{"a\nw\n"}},
		{"error flushes too", 64, time.Hour, []line{{zerolog.ErrorLevel, "e\n"}}, []string{"e\n"}},
		{"full buffer is written before the line that does not fit", 8, time.Hour,
			[]line{info("1234\n"), info("5678\n")}, []string{"1234\n"}},
		{"a line longer than the buffer goes straight through", 4, time.Hour,
			[]line{info("ab\n"), info("123456\n")}, []string{"ab\n", "123456\n"}},
		{"no interval: every line at once", 64, 0, []line{info("a\n"), info("b\n")}, []string{"a\n", "b\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			w := New(s, tt.size, tt.interval)
			var all strings.Builder
			for _, l := range tt.lines {
				if _, err := w.WriteLevel(l.level, []byte(l.text)); err != nil {
					t.Fatal(err)
				}
				all.WriteString(l.text)
			}
			if got := s.get(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("writes before Close = %q, want %q", got, tt.want)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(s.get(), ""); got != all.String() {
				t.Fatalf("after Close the output is %q, want every line once, in order: %q", got, all.String())
			}
			w.Write([]byte("late\n"))
			if got := s.get(); got[len(got)-1] != "late\n" {
				t.Fatalf("a line after Close was not written at once: %q", got)
			}
		})
	}
}

// TestWriterInterval: buffered lines reach the output without another
// line or a Close, once the interval has passed.
func TestWriterInterval(t *testing.T) {
	s := &sink{}
	w := New(s, 1<<10, 10*time.Millisecond)
	defer w.Close()
	w.Write([]byte("a\n"))
	for i := 0; ; i++ {
		if got := s.get(); len(got) > 0 {
			if strings.Join(got, "") != "a\n" {
				t.Fatalf("output %q, want %q", got, "a\n")
			}
			break
		}
		if i == 500 {
			t.Fatal("a buffered line was not written 5 s after it was logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.Write([]byte("b\n")) // the timer arms again after a flush
	for i := 0; strings.Join(s.get(), "") != "a\nb\n"; i++ {
		if i == 500 {
			t.Fatalf("second line not written by the timer: %q", s.get())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWriterConcurrent: lines logged from many goroutines through zerolog
// come out whole, each exactly once.
func TestWriterConcurrent(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	w := New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}), 256, time.Millisecond)
	log := zerolog.New(w)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				log.Info().Int("g", g).Int("i", i).Msg("line")
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"level":"info","g":`) || !strings.HasSuffix(l, `"message":"line"}`) || seen[l] {
			t.Fatalf("torn or repeated line %q", l)
		}
		seen[l] = true
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// BenchmarkWriter is the cost of one access-line-sized write.
func BenchmarkWriter(b *testing.B) {
	w := New(writerFunc(func(p []byte) (int, error) { return len(p), nil }), 64<<10, 100*time.Millisecond)
	line := []byte(strings.Repeat("x", 400) + "\n")
	b.ReportAllocs()
	for b.Loop() {
		w.WriteLevel(zerolog.InfoLevel, line)
	}
}
