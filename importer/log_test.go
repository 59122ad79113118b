package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestLogResult(t *testing.T) {
	res := Result{
		Outcome: OutcomePartial, Reason: "", MessageID: "<m@example.org>", Size: 42,
		Envelope:  Envelope{Sender: "bob@example.org", SenderKnown: true, Recipients: []string{"a@example.com", "x@example.com"}, Source: "guessed", Guessed: true},
		Delivered: []Delivery{{Account: "b@example.com"}, {Account: "a@example.com"}},
		Failed:    []Failure{{Recipient: "x@example.com", Status: "5.1.1"}},
		Ignored:   []string{"y@elsewhere.example"},
	}
	tests := []struct {
		name  string
		err   error
		level string
		want  map[string]any
	}{
		{"partial", nil, "warn", map[string]any{
			"outcome": "partial", "file": "m.eml", "message_id": "<m@example.org>", "from": "bob@example.org",
			"envelope_source": "guessed", "size": float64(42), "action": "removed", "recipients_guessed": true,
		}},
		{"retry", errors.New("disk full"), "warn", map[string]any{"outcome": "retry", "error": "disk full"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			LogResult(zerolog.New(&buf), Message{Name: "m.eml"}, res, "removed", tc.err, time.Now())
			var ev map[string]any
			if err := json.Unmarshal(buf.Bytes(), &ev); err != nil {
				t.Fatalf("%v: %s", err, buf.Bytes())
			}
			if ev["level"] != tc.level || ev["message"] != "message" {
				t.Errorf("level %v message %v", ev["level"], ev["message"])
			}
			for k, v := range tc.want {
				if ev[k] != v {
					t.Errorf("%s = %v, want %v", k, ev[k], v)
				}
			}
			for _, k := range []string{"recipients", "accounts", "failed", "ignored", "duration_ms"} {
				if _, ok := ev[k]; !ok {
					t.Errorf("no %s in %s", k, buf.Bytes())
				}
			}
			if accts, _ := ev["accounts"].([]any); len(accts) != 2 || accts[0] != "a@example.com" {
				t.Errorf("accounts %v, want sorted", ev["accounts"])
			}
		})
	}
}
