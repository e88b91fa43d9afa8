package config

// WithoutLines returns c without the key lines Parse records, for
// comparing configurations by value.
func WithoutLines(c *Config) *Config {
	out := *c
	out.lines = nil
	return &out
}
