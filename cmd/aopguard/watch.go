package main

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/aopguard/aopguard/config"
)

// watchDebounce is how long file events must be quiet before the files are
// checked: an editor or a Kubernetes Secret update writes several in a row.
const watchDebounce = 300 * time.Millisecond

// watchedFiles lists every file the configuration reads.
func watchedFiles(configFile string, cfg *config.Config) []string {
	var files []string
	add := func(p string) {
		if p != "" && !slices.Contains(files, p) {
			files = append(files, p)
		}
	}
	if configFile != "" {
		abs, err := filepath.Abs(configFile)
		if err == nil {
			configFile = abs
		}
		add(configFile)
	}
	if cfg.ZoneCA != config.CloudflareCA {
		add(cfg.ZoneCA)
	}
	add(cfg.CRL)
	add(cfg.CloudflareIPs)
	add(cfg.SessionTicketKeys)
	for _, kp := range cfg.Certificates {
		add(kp.Cert)
		add(kp.Key)
	}
	for _, h := range cfg.Hosts {
		add(h.CA)
		add(h.CRL)
	}
	return files
}

// contentHash fingerprints the contents of files (following symlinks, as
// loading does); a file that cannot be read counts as its error text.
func contentHash(files []string) [32]byte {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f))
		h.Write([]byte{0})
		data, err := os.ReadFile(f)
		if err != nil {
			h.Write([]byte("unreadable: " + err.Error()))
		} else {
			h.Write(data)
		}
		h.Write([]byte{0})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// reloader is the one reload loop: every trigger (SIGHUP, a file event, the
// periodic check) is a request to it, and only it reads the files and
// applies them, one reload after the other. Two goroutines reading the
// files each on their own could apply an older configuration after a
// newer one.
type reloader struct {
	force chan string   // SIGHUP: reload whatever the files hold
	check chan string   // file events and the periodic check: reload if the content changed
	tried chan struct{} // a reload was tried: the watcher looks at the folders again
}

func newReloader() *reloader {
	return &reloader{force: make(chan string, 1), check: make(chan string, 1), tried: make(chan struct{}, 1)}
}

// request asks for a reload (forced, or only when the files changed) and
// never blocks: a request already waiting will read the files as they are
// when it runs, so it covers this one too.
func (r *reloader) request(force bool, why string) {
	ch := r.check
	if force {
		ch = r.force
	}
	select {
	case ch <- why:
	default:
	}
}

// run serves the requests until ctx is done.
func (r *reloader) run(ctx context.Context, a *app, f *flags) {
	for {
		var tried bool
		select {
		case <-ctx.Done():
			return
		case why := <-r.force:
			a.reload(f, why)
			tried = true
		case why := <-r.check:
			tried = a.reloadIfChanged(f, why)
		}
		if tried {
			select {
			case r.tried <- struct{}{}:
			default:
			}
		}
	}
}

// watch asks r for a reload when a file the configuration reads changes:
// fsnotify on the folders that hold them (a Kubernetes Secret volume is
// updated by swapping a "..data" symlink in the folder, which a watch on
// the file itself would miss), debounced, and a periodic content check as
// a safety net for filesystems without notifications. Only a change of
// content reloads. It returns when ctx is done.
func (a *app) watch(ctx context.Context, f *flags, r *reloader) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn().Err(err).Msg("file notifications unavailable: relying on the periodic check and SIGHUP")
	} else {
		defer w.Close()
	}
	var dirs []string
	rewatch := func() {
		if w == nil {
			return
		}
		var want []string
		for _, file := range watchedFiles(f.configFile, a.config()) {
			if d := filepath.Dir(file); !slices.Contains(want, d) {
				want = append(want, d)
			}
		}
		for _, d := range dirs {
			if !slices.Contains(want, d) {
				w.Remove(d)
			}
		}
		for _, d := range want {
			if !slices.Contains(dirs, d) {
				if err := w.Add(d); err != nil {
					a.log.Warn().Err(err).Str("dir", d).Msg("cannot watch folder; its files are still checked periodically")
				}
			}
		}
		dirs = want
	}
	rewatch()

	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	interval := a.config().ReloadCheckInterval
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			debounce.Reset(watchDebounce)
		case err := <-errs:
			a.log.Warn().Err(err).Msg("file watch error; the periodic check continues")
		case <-debounce.C:
			r.request(false, "file change")
		case <-ticker.C:
			r.request(false, "periodic check")
		case <-r.tried:
			rewatch()
			if d := a.config().ReloadCheckInterval; d != interval {
				interval = d
				ticker.Reset(d)
			}
		}
	}
}

// reloadIfChanged reloads when the watched files' content differs from
// what the last load (successful or not) saw, and reports whether it
// tried. A broken file is tried once, not on every event, and again as
// soon as its content changes. Only the reload loop calls it.
func (a *app) reloadIfChanged(f *flags, why string) bool {
	sum := contentHash(watchedFiles(f.configFile, a.config()))
	a.mu.Lock()
	same := sum == a.lastHash
	a.mu.Unlock()
	if same {
		return false
	}
	a.reload(f, why)
	return true
}
