package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/toolgate/toolgate/internal/pgschema"
)

// Shared is the audit trail of several replicas in PostgreSQL, as their
// [Shipper]s wrote it: one hash chain per node.
type Shared struct {
	pool *pgxpool.Pool
}

// OpenShared connects to the database at url and brings the audit
// tables up to date.
func OpenShared(ctx context.Context, url string) (*Shared, error) {
	pool, err := pgschema.Open(ctx, url, 2)
	if err != nil {
		return nil, fmt.Errorf("open shared audit trail: %w", err)
	}
	if err := pgschema.Migrate(ctx, pool, "audit", pgMigrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open shared audit trail: %w", err)
	}
	return &Shared{pool: pool}, nil
}

// Close closes the connections.
func (s *Shared) Close() { s.pool.Close() }

// Nodes lists the nodes with a chain, sorted.
func (s *Shared) Nodes(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT node FROM audit_nodes ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("list audit nodes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Read hands fn the events of node (all nodes when node is ""), since a
// time (zero: all), ordered by time, and returns how many it read. It
// stops at the first error of fn. A line that is not an event is an error
// naming its node and sequence number.
func (s *Shared) Read(ctx context.Context, node string, since time.Time, fn func(node string, e *Event) error) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT node, seq, line FROM audit_events
		WHERE ($1 = '' OR node = $1) AND time >= $2 ORDER BY time, node, seq`, node, since)
	if err != nil {
		return 0, fmt.Errorf("read shared audit trail: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var nd, line string
		var seq int64
		if err := rows.Scan(&nd, &seq, &line); err != nil {
			return n, fmt.Errorf("read shared audit trail: %w", err)
		}
		ev := new(Event)
		if err := decodeLine([]byte(line), ev); err != nil {
			return n, fmt.Errorf("node %s line %d: malformed audit line: %w", nd, seq, err)
		}
		n++
		if err := fn(nd, ev); err != nil {
			return n, err
		}
	}
	return n, rows.Err()
}

// Verify checks the hash chain of each node (of node alone when it is
// not ""), line by line in sequence order, as [Verify] checks a local
// log: a broken link names the node (File) and the line's sequence
// number (Line). A gap in the sequence numbers is a broken link too. The
// report's Head is the database's head of the chain; a node without a
// chain gets a report of no lines and an empty Head.
func (s *Shared) Verify(ctx context.Context, node string) (map[string]*VerifyReport, error) {
	nodes := []string{node}
	if node == "" {
		var err error
		if nodes, err = s.Nodes(ctx); err != nil {
			return nil, err
		}
	}
	out := map[string]*VerifyReport{}
	for _, nd := range nodes {
		rep, err := s.verifyNode(ctx, nd)
		if err != nil {
			return nil, err
		}
		out[nd] = rep
	}
	return out, nil
}

func (s *Shared) verifyNode(ctx context.Context, node string) (*VerifyReport, error) {
	rep := &VerifyReport{Files: []string{"node " + node}}
	rows, err := s.pool.Query(ctx, `SELECT seq, line FROM audit_events WHERE node = $1 ORDER BY seq`, node)
	if err != nil {
		return nil, fmt.Errorf("verify shared audit trail: %w", err)
	}
	defer rows.Close()
	var prev string
	var last int64
	var link struct {
		Prev *string `json:"prev"`
	}
	for rows.Next() {
		var seq int64
		var line string
		if err := rows.Scan(&seq, &line); err != nil {
			return nil, fmt.Errorf("verify shared audit trail: %w", err)
		}
		if rep.Broken != nil {
			continue
		}
		broken := func(got, reason string) {
			rep.Broken = &BrokenLink{File: node, Line: int(seq), Expected: prev, Got: got, Reason: reason}
		}
		link.Prev = nil
		switch err := decodeLine([]byte(line), &link); {
		case err != nil:
			broken("", "not a JSON object: "+err.Error())
			continue
		case link.Prev == nil:
			broken("", "no prev field")
			continue
		case last != 0 && seq != last+1:
			broken(*link.Prev, fmt.Sprintf("lines %d to %d are missing", last+1, seq-1))
			continue
		case last == 0:
			rep.Start = *link.Prev
		case *link.Prev != prev:
			broken(*link.Prev, "prev is not the SHA-256 of the line before: a line before it was changed, removed or moved, or this one was")
			continue
		}
		sum := sha256.Sum256([]byte(line))
		prev = hex.EncodeToString(sum[:])
		last = seq
		rep.Lines++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("verify shared audit trail: %w", err)
	}
	err = s.pool.QueryRow(ctx, `SELECT head FROM audit_nodes WHERE node = $1`, node).Scan(&rep.Head)
	if errors.Is(err, pgx.ErrNoRows) && rep.Lines == 0 && rep.Broken == nil {
		return rep, nil // no chain of this name: an empty report, Head ""
	}
	if err != nil {
		return nil, fmt.Errorf("verify shared audit trail: node %s: %w", node, err)
	}
	if rep.Broken == nil && rep.Head != prev {
		rep.Broken = &BrokenLink{File: node, Line: int(last), Expected: rep.Head, Got: prev, Reason: "the last line is not the chain's recorded head: lines were removed from the end"}
	}
	return rep, nil
}
