package main

import (
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a *zap.Logger (what certmagic takes) that writes
// through log, so that aopguard has one logging stack: each entry becomes
// one flat zerolog event, its fields next to time, level and message
// rather than a JSON document nested in another. Entries below min are
// dropped.
func newZapLogger(log zerolog.Logger, name string, min zapcore.Level) *zap.Logger {
	return zap.New(&zerologCore{log: log, min: min}).Named(name)
}

// zerologCore is a zapcore.Core writing to a zerolog.Logger.
type zerologCore struct {
	log    zerolog.Logger
	min    zapcore.Level
	fields []zapcore.Field // from With
}

func (c *zerologCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *zerologCore) With(fields []zapcore.Field) zapcore.Core {
	return &zerologCore{log: c.log, min: c.min, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *zerologCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write logs one entry as one zerolog event. zap's own panic and fatal
// levels are logged as errors; zap acts on them after Write.
func (c *zerologCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := zerolog.ErrorLevel
	switch e.Level {
	case zapcore.DebugLevel:
		level = zerolog.DebugLevel
	case zapcore.InfoLevel:
		level = zerolog.InfoLevel
	case zapcore.WarnLevel:
		level = zerolog.WarnLevel
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	ev := c.log.WithLevel(level)
	if e.LoggerName != "" {
		ev = ev.Str("component", e.LoggerName)
	}
	ev.Fields(enc.Fields).Msg(e.Message)
	return nil
}

func (c *zerologCore) Sync() error { return nil }
