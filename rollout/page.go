package rollout

import (
	_ "embed"
	"html/template"
	"io"
	"sort"
	"time"
)

//go:embed page.html
var pageHTML string

// page is parsed once; html/template escapes every value by context.
var page = template.Must(template.New("rollout").Parse(pageHTML))

// Expiry thresholds of the page's timeline, as the expiry warnings and
// the alert rules use them.
const (
	pageWarnDays   = 30
	pageUrgentDays = 14
	// pageMinHorizon is the shortest timeline shown, so CAs that expire
	// in years do not squash the warning marks into the left edge.
	pageMinHorizon = 365
)

type pageRow struct {
	Source, Outcome string
	Hour, Total     uint64
	Bad             bool
}

type pagePolicy struct {
	PolicyReport
	Rows []pageRow
}

type pageCA struct {
	Subject, Hosts, NotAfter string
	DaysLeft                 int
	Width                    int // percent of the horizon
	Class                    string
}

type pageData struct {
	Report    Report
	Generated string
	Refresh   int
	Policies  []pagePolicy
	Timeline  []pageCA
	Horizon   int
	Mark14    int
	Mark30    int
}

// WritePage renders r as one HTML page, with no external assets, that
// reloads itself every refresh.
func WritePage(w io.Writer, r Report, refresh time.Duration) error {
	d := pageData{Report: r, Generated: r.Generated.UTC().Format("2006-01-02 15:04:05 UTC"), Refresh: max(1, int(refresh.Seconds()))}
	type caKey struct {
		subject  string
		notAfter time.Time
	}
	cas := map[caKey]*pageCA{}
	var order []caKey
	for _, p := range r.Policies {
		d.Policies = append(d.Policies, pagePolicy{PolicyReport: p, Rows: pageRows(p)})
		for _, ca := range p.CAs {
			k := caKey{ca.Subject, ca.NotAfter}
			if c := cas[k]; c != nil {
				c.Hosts += ", " + p.Name
				continue
			}
			cas[k] = &pageCA{Subject: ca.Subject, Hosts: p.Name, NotAfter: ca.NotAfter.UTC().Format("2006-01-02"), DaysLeft: ca.DaysLeft}
			order = append(order, k)
		}
	}
	d.Horizon = pageMinHorizon
	for _, k := range order {
		d.Horizon = max(d.Horizon, cas[k].DaysLeft)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].notAfter.Before(order[j].notAfter) })
	for _, k := range order {
		c := cas[k]
		c.Width = min(100, max(0, c.DaysLeft*100/d.Horizon))
		switch {
		case c.DaysLeft < 0 || !k.notAfter.After(r.Generated):
			c.Class, c.Width = "expired", 100
		case c.DaysLeft < pageUrgentDays:
			c.Class = "urgent"
		case c.DaysLeft < pageWarnDays:
			c.Class = "warn"
		default:
			c.Class = "ok"
		}
		d.Timeline = append(d.Timeline, *c)
	}
	d.Mark14, d.Mark30 = pageUrgentDays*100/d.Horizon, pageWarnDays*100/d.Horizon
	return page.Execute(w, d)
}

// pageRows lists a policy's evidence by source, then valid before failed,
// with the last hour's and the since-start counts side by side.
func pageRows(p PolicyReport) []pageRow {
	type key struct{ source, outcome string }
	rows := map[key]*pageRow{}
	add := func(c Count, hour bool) {
		outcome, bad := "valid", false
		switch {
		case c.Result == "none" && c.Reason == "":
			outcome = "not checked"
		case c.Result != "success":
			outcome, bad = c.Reason, true
		}
		k := key{c.Source, outcome}
		r := rows[k]
		if r == nil {
			r = &pageRow{Source: c.Source, Outcome: outcome, Bad: bad}
			rows[k] = r
		}
		if hour {
			r.Hour += c.Count
		} else {
			r.Total += c.Count
		}
	}
	for _, c := range p.LastHour.By {
		add(c, true)
	}
	for _, c := range p.SinceStart.By {
		add(c, false)
	}
	out := make([]pageRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Source != b.Source {
			return a.Source == SourceCloudflare
		}
		if a.Bad != b.Bad {
			return !a.Bad
		}
		return a.Outcome < b.Outcome
	})
	return out
}
