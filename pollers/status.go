package pollers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// Health is a poller's health as `mxdrop status`, /readyz and the metrics report it. The
// poller writes it to state_dir/pollers/<name>/status.json after every cycle, so other
// processes can read it without touching the locked state database.
type Health struct {
	Poller       string    `json:"poller"`
	LastCycle    time.Time `json:"last_cycle,omitzero"`
	LastSuccess  time.Time `json:"last_success,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
	FailingSince time.Time `json:"failing_since,omitzero"` // zero while the last cycle succeeded
	Errors       int64     `json:"errors"`                 // failed cycles since start
}

// StatusFile is the name of the status file in a poller's state folder.
const StatusFile = "status.json"

// Health returns the poller's current status.
func (p *Poller) Health() Health {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	s := p.health
	s.Poller = p.name
	return s
}

// recordCycle updates the status after a cycle and writes the status file. Writing is
// best effort: the file is informational, a lost update is repaired by the next cycle.
func (p *Poller) recordCycle(st CycleStats, err error) {
	now := p.now()
	p.healthMu.Lock()
	p.health.LastCycle = now
	if err == nil {
		p.health.LastSuccess = now
		p.health.FailingSince = time.Time{}
	} else {
		p.health.Errors++
		p.health.LastError = err.Error()
		p.health.LastErrorAt = now
		if p.health.FailingSince.IsZero() {
			p.health.FailingSince = now
		}
	}
	s := p.health
	s.Poller = p.name
	p.healthMu.Unlock()
	if p.deps.Observe != nil {
		p.deps.Observe(p.name, st, err)
	}
	b, jerr := json.MarshalIndent(s, "", "  ")
	if jerr != nil {
		return
	}
	tmp := filepath.Join(p.dir, "."+StatusFile+".tmp")
	if os.WriteFile(tmp, b, 0o640) == nil {
		os.Rename(tmp, filepath.Join(p.dir, StatusFile))
	}
}

// ReadHealth reads the status file a poller (possibly of another process) wrote in its
// state folder stateDir/pollers/<name>.
func ReadHealth(stateDir, name string) (Health, error) {
	var s Health
	b, err := os.ReadFile(filepath.Join(stateDir, "pollers", name, StatusFile))
	if err != nil {
		return s, err
	}
	err = json.Unmarshal(b, &s)
	return s, err
}
