package feed

import (
	"encoding/base64"
	"encoding/json"
	"maps"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// position is where a reader of the merged feed stands: the cursor of each
// source's own feed, bound to one community and one facility. A source
// missing from At is read from its beginning. Positions of sources this
// process does not know (not deployed here, or gone) are carried along
// unchanged, so nothing of theirs is lost when they come back.
type position struct {
	Version   int               `json:"v"`
	Community string            `json:"c"`
	Facility  string            `json:"f"`
	At        map[string]string `json:"s,omitempty"`
}

// cursorVersion is the format of cursors this code writes and accepts.
const cursorVersion = 1

// startOf is the position before the first event kept, for a reader of
// facility in community.
func startOf(community, facility string) position {
	return position{Version: cursorVersion, Community: community, Facility: facility, At: map[string]string{}}
}

// with returns a copy of p in which source stands at cursor.
func (p position) with(source, cursor string) position {
	at := maps.Clone(p.At)
	if at == nil {
		at = map[string]string{}
	}
	at[source] = cursor
	p.At = at
	return p
}

// encode returns the opaque cursor of p. JSON writes map keys in order, so
// the same position always gives the same cursor.
func (p position) encode() string {
	b, err := json.Marshal(p)
	if err != nil {
		// A struct of strings always marshals.
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePosition reads a cursor that field of a request carries, for a
// reader of facility in community. An empty cursor is the start. A cursor
// of another community or facility is refused: a cursor never moves from
// one facility's feed to another's.
func decodePosition(cursor, field, community, facility string) (position, error) {
	if cursor == "" {
		return startOf(community, facility), nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	var p position
	if err != nil || json.Unmarshal(b, &p) != nil || p.Version != cursorVersion || p.Community == "" || p.Facility == "" {
		return position{}, apierr.Invalid(field, "not a cursor of the facility feed; pass the next_cursor or an event cursor of an earlier call, or nothing to start over")
	}
	if p.Community != community || p.Facility != facility {
		return position{}, apierr.Invalid(field, "the cursor belongs to another facility's feed; a cursor only works for the facility whose token read it")
	}
	if p.At == nil {
		p.At = map[string]string{}
	}
	return p, nil
}

// callerPosition decodes a cursor of the caller's own feed.
func callerPosition(cursor, field string, c auth.Caller) (position, error) {
	return decodePosition(cursor, field, c.Community, c.Facility)
}
