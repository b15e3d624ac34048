package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgMigrations are the PostgreSQL tables of the shared audit trail: every
// replica (node) ships its log there as a chain of its own. A line is kept
// byte for byte, so that its SHA-256, which the next line's prev holds,
// can be checked in the database; a few of its fields are columns for
// queries. audit_nodes holds each chain's head: the sequence number and
// hash of its last line, updated in the transaction that adds lines, so
// that it is the shipped position.
var pgMigrations = []string{
	`CREATE TABLE audit_nodes (
		node TEXT PRIMARY KEY,
		seq  BIGINT NOT NULL,
		head TEXT NOT NULL
	);
	CREATE TABLE audit_events (
		node    TEXT NOT NULL,
		seq     BIGINT NOT NULL,
		time    TIMESTAMPTZ NOT NULL,
		type    TEXT NOT NULL,
		project TEXT NOT NULL DEFAULT '',
		key_id  TEXT NOT NULL DEFAULT '',
		tool    TEXT NOT NULL DEFAULT '',
		line    TEXT NOT NULL,
		PRIMARY KEY (node, seq)
	);
	CREATE INDEX audit_events_by_time ON audit_events (time);`,
}

// ShipperOptions configure a [Shipper]. A nil pointer means defaults.
type ShipperOptions struct {
	// Interval is how often the shipper looks for new lines (default
	// 200ms); [Shipper.Kick] makes it look at once.
	Interval time.Duration
	// Logger receives the start and end of shipping failures (default
	// slog.Default()).
	Logger *slog.Logger
	// OnStateChange, when set, is called when shipping starts failing
	// (with the error) and works again (nil).
	OnStateChange func(error)
}

// batchLines bounds the lines shipped in one transaction.
const batchLines = 500

// Shipper copies the lines of a local audit log into PostgreSQL, as the
// chain of one node (replica). The local log stays the record written
// before a request is answered; the shipper follows it, across
// rotations, and picks up where the database's copy ends whenever it
// starts: the position is the head of the node's chain in the database,
// updated in the same transaction as the lines it covers, so a crash or
// an outage of the database (or of the process, kill -9 included) loses
// and repeats no line. Lines written while PostgreSQL is out of reach are
// shipped once it answers, as long as the local log still holds them
// (rotation keeps audit.maxFiles files). A local log that no longer holds
// the head goes on at its first line the chain does not hold (see
// resume): no line is shipped twice, and the chain shows a break where
// the local log parts from it.
type Shipper struct {
	pool     *pgxpool.Pool
	node     string
	path     string
	interval time.Duration
	log      *slog.Logger
	onChange func(error)
	kick     chan struct{}

	// The position in the local log, used by Run only.
	f      *os.File
	fi     os.FileInfo
	r      *bufio.Reader
	seq    int64  // of the last line shipped
	head   string // hex SHA-256 of the last line shipped; "" before any
	placed bool   // f is at the line after head

	closeOnce sync.Once

	mu      sync.Mutex
	err     error
	since   time.Time
	shipped int64
}

// NewShipper connects to the database at url, brings the audit tables up
// to date and returns a shipper of the log at path as node's chain. Run
// ships.
func NewShipper(ctx context.Context, url, node, path string, opts *ShipperOptions) (*Shipper, error) {
	var o ShipperOptions
	if opts != nil {
		o = *opts
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if node == "" {
		return nil, errors.New("audit shipper: empty node name")
	}
	shared, err := OpenShared(ctx, url)
	if err != nil {
		return nil, err
	}
	pool := shared
	return &Shipper{pool: pool.pool, node: node, path: path, interval: o.Interval, log: o.Logger, onChange: o.OnStateChange, kick: make(chan struct{}, 1)}, nil
}

// Kick makes Run look for new lines now.
func (s *Shipper) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Healthy returns nil while shipping works, else why it fails.
func (s *Shipper) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("audit log not shipped to PostgreSQL since %s: %w", s.since.UTC().Format(time.RFC3339), s.err)
	}
	return nil
}

// Shipped is the number of lines shipped since the shipper was made.
func (s *Shipper) Shipped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shipped
}

// Close closes the connections and the local file. Call it after Run
// returned.
func (s *Shipper) Close() {
	s.closeOnce.Do(func() {
		s.pool.Close()
		if s.f != nil {
			s.f.Close()
		}
	})
}

// Run ships new lines until ctx is done, then ships what is left (for up
// to five seconds).
func (s *Shipper) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.report(s.ShipOnce(ctx))
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := s.ShipOnce(fctx); err != nil {
				s.log.Error("audit lines left unshipped at exit; they are shipped at the next start", "error", err)
			}
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// report records the outcome of a round, logging the first failure and
// the recovery.
func (s *Shipper) report(err error) {
	s.mu.Lock()
	was := s.err
	s.err = err
	if err != nil && was == nil {
		s.since = time.Now()
	}
	s.mu.Unlock()
	switch {
	case err != nil && was == nil:
		s.log.Error("cannot ship the audit log to PostgreSQL; the lines wait in the local log", "node", s.node, "error", err)
		if s.onChange != nil {
			s.onChange(err)
		}
	case err == nil && was != nil:
		s.log.Info("audit log shipping to PostgreSQL works again", "node", s.node)
		if s.onChange != nil {
			s.onChange(nil)
		}
	}
}

// ShipOnce ships every complete line the local log holds past the
// database's copy.
func (s *Shipper) ShipOnce(ctx context.Context) error {
	if !s.placed {
		if err := s.place(ctx); err != nil {
			return err
		}
	}
	for {
		lines, err := s.readBatch()
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			return nil
		}
		if err := s.ship(ctx, lines); err != nil {
			s.placed = false // the file position ran ahead: find it again
			return err
		}
	}
}

// place finds, in the local log, the line after the head of the node's
// chain in the database. When the local log no longer holds the head,
// resume finds where to go on.
func (s *Shipper) place(ctx context.Context) error {
	var seq int64
	var head string
	err := s.pool.QueryRow(ctx, `SELECT seq, head FROM audit_nodes WHERE node = $1`, s.node).Scan(&seq, &head)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read the shipped position: %w", err)
	}
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	names, _, err := rotatedFiles(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	names = append(slices.Clone(names), s.path) // oldest first
	var first *os.File
	if head == "" {
		if first, err = openExisting(names); err != nil {
			return err
		}
	} else {
		for _, name := range names {
			f, err := os.Open(name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			found, err := seekPast(f, head)
			if err != nil {
				f.Close()
				return err
			}
			if found {
				first = f
				break
			}
			f.Close()
		}
		if first == nil {
			if first, err = s.resume(ctx, names); err != nil {
				return err
			}
		}
	}
	if first == nil {
		return nil // no local log yet
	}
	fi, err := first.Stat()
	if err != nil {
		first.Close()
		return err
	}
	s.f, s.fi, s.seq, s.head, s.placed = first, fi, seq, head, true
	s.r = bufio.NewReaderSize(first, 64<<10)
	return nil
}

// resume places the shipper when the local log no longer holds the head
// of the node's chain: on the first line of the local log that the chain
// does not hold. That is the oldest line kept when the lines up to the
// head were rotated away; the lines rotated away before they were
// shipped are lost to the chain, which shows a break there (unless the
// oldest line kept is the one after the head). When the local log lost
// lines it had shipped (a crash of the machine lost writes not yet on
// disk, or the log was restored from a copy), its lines up to the loss
// are in the chain already and are skipped, not shipped again; its new
// lines follow, and the chain shows the fork where they start. It
// returns nil when there is no local log.
func (s *Shipper) resume(ctx context.Context, names []string) (*os.File, error) {
	skipped := 0
	var cur *os.File // the newest file read: where shipping goes on
	for _, name := range names {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if cur != nil {
			cur.Close()
		}
		cur = f
		off, n, found, err := s.skipShipped(ctx, f)
		skipped += n
		if err == nil {
			_, err = f.Seek(off, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		if found {
			break
		}
	}
	if skipped > 0 {
		s.log.Warn("the local audit log lost lines it had shipped (a crash of the machine, or a restored copy); the lines the shared chain holds already are not shipped again",
			"node", s.node, "skipped", skipped)
	}
	return cur, nil
}

// skipShipped reads f from its start up to the first complete line that
// the node's chain does not hold (found) and returns its offset and the
// number of lines before it, all in the chain; without such a line, the
// offset is the end of f's complete lines. Lines are looked up by time,
// which the chain indexes, then compared byte for byte; a line without a
// time counts as not in the chain.
func (s *Shipper) skipShipped(ctx context.Context, f *os.File) (off int64, skipped int, found bool, err error) {
	br := bufio.NewReaderSize(f, 64<<10)
	var buf []byte
	type local struct {
		line []byte
		time time.Time
	}
	for {
		var batch []local
		var lo, hi time.Time
		for len(batch) < batchLines {
			line, complete, err := readLine(br, &buf)
			if errors.Is(err, io.EOF) || (err == nil && !complete) {
				break
			}
			if err != nil {
				return 0, skipped, false, err
			}
			var fields lineFields
			_ = decodeLine(line, &fields)
			t := fields.Time
			if !t.IsZero() && (lo.IsZero() || t.Before(lo)) {
				lo = t
			}
			if t.After(hi) {
				hi = t
			}
			batch = append(batch, local{slices.Clone(line), t})
		}
		if len(batch) == 0 {
			return off, skipped, false, nil
		}
		held, err := s.heldLines(ctx, lo, hi)
		if err != nil {
			return 0, skipped, false, err
		}
		for _, l := range batch {
			if l.time.IsZero() || !held[sha256.Sum256(l.line)] {
				return off, skipped, true, nil
			}
			off += int64(len(l.line)) + 1
			skipped++
		}
	}
}

// heldLines returns the SHA-256 of every line of the node's chain whose
// time is between lo and hi (none when lo is zero).
func (s *Shipper) heldLines(ctx context.Context, lo, hi time.Time) (map[[sha256.Size]byte]bool, error) {
	held := map[[sha256.Size]byte]bool{}
	if lo.IsZero() {
		return held, nil
	}
	// The database keeps microseconds: a margin covers the rounding.
	rows, err := s.pool.Query(ctx, `SELECT line FROM audit_events WHERE node = $1 AND time BETWEEN $2 AND $3`,
		s.node, lo.Add(-time.Millisecond), hi.Add(time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("look up shipped audit lines: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, fmt.Errorf("look up shipped audit lines: %w", err)
		}
		held[sha256.Sum256([]byte(line))] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up shipped audit lines: %w", err)
	}
	return held, nil
}

// seekPast reads f up to and including the line whose SHA-256 is head,
// leaving f just after it; found is false (and f at its start) when f
// does not hold it.
func seekPast(f *os.File, head string) (found bool, err error) {
	br := bufio.NewReaderSize(f, 64<<10)
	var buf []byte
	var off int64
	for {
		line, complete, err := readLine(br, &buf)
		if errors.Is(err, io.EOF) || (err == nil && !complete) {
			_, err := f.Seek(0, io.SeekStart)
			return false, err
		}
		if err != nil {
			return false, err
		}
		off += int64(len(line)) + 1
		sum := sha256.Sum256(line)
		if hex.EncodeToString(sum[:]) == head {
			_, err := f.Seek(off, io.SeekStart)
			return true, err
		}
	}
}

// readBatch reads up to batchLines complete lines from the position,
// moving on to the next file when a rotation finished the current one.
// A torn line (still being written) is left for the next round.
func (s *Shipper) readBatch() ([][]byte, error) {
	if s.f == nil {
		return nil, s.placeLater()
	}
	var lines [][]byte
	var buf []byte
	for len(lines) < batchLines {
		pos, _ := s.f.Seek(0, io.SeekCurrent)
		pos -= int64(s.r.Buffered())
		line, complete, err := readLine(s.r, &buf)
		if err == nil && complete {
			lines = append(lines, slices.Clone(line))
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return lines, err
		}
		// At the end of what is written: rewind over a torn line.
		if _, err := s.f.Seek(pos, io.SeekStart); err != nil {
			return lines, err
		}
		s.r.Reset(s.f)
		if len(lines) > 0 {
			return lines, nil
		}
		next, err := s.nextFile()
		if err != nil || next == nil {
			return nil, err
		}
		s.f.Close()
		s.f, s.r = next, bufio.NewReaderSize(next, 64<<10)
		if s.fi, err = next.Stat(); err != nil {
			return nil, err
		}
	}
	return lines, nil
}

// placeLater looks for the log again on the next round.
func (s *Shipper) placeLater() error {
	s.placed = false
	return nil
}

// nextFile returns the file written after the current one when a
// rotation (or the log's replacing a removed file) finished the current
// one, or nil when the current one is still the log's.
func (s *Shipper) nextFile() (*os.File, error) {
	fi, err := os.Stat(s.path)
	if err == nil && os.SameFile(fi, s.fi) {
		return nil, nil
	}
	names, _, err := rotatedFiles(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	names = append(slices.Clone(names), s.path) // oldest first
	for i, name := range names {
		if nfi, err := os.Stat(name); err == nil && os.SameFile(nfi, s.fi) {
			if i+1 < len(names) {
				return openExisting(names[i+1:])
			}
			return nil, nil
		}
	}
	// The current file is gone (removed by retention): go on with the
	// oldest one left.
	return openExisting(names)
}

func openExisting(names []string) (*os.File, error) {
	for _, n := range names {
		f, err := os.Open(n)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, nil
}

// lineFields are the columns of a shipped line.
type lineFields struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Project string    `json:"project"`
	KeyID   string    `json:"keyId"`
	Tool    string    `json:"tool"`
	Prev    string    `json:"prev"`
}

// ship adds lines to the node's chain in one transaction, after checking
// that the chain's head is where this shipper left it: two replicas
// configured with one node name would interleave their lines.
func (s *Shipper) ship(ctx context.Context, lines [][]byte) error {
	var seq int64
	var head string
	var breakAt int64 // the first line that does not follow the one before it, or 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		breakAt = 0
		if _, err := tx.Exec(ctx, `INSERT INTO audit_nodes (node, seq, head) VALUES ($1, 0, '') ON CONFLICT (node) DO NOTHING`, s.node); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT seq, head FROM audit_nodes WHERE node = $1 FOR UPDATE`, s.node).Scan(&seq, &head); err != nil {
			return err
		}
		if seq != s.seq || head != s.head {
			return fmt.Errorf("the shared chain of node %q moved under this replica (another replica uses the same cluster.node?)", s.node)
		}
		rows := make([][]any, 0, len(lines))
		var f lineFields
		for _, line := range lines {
			f = lineFields{}
			if err := decodeLine(line, &f); err != nil || f.Time.IsZero() {
				f.Time, f.Type = time.Now(), "unreadable" // kept as is: Verify reports it
			}
			if seq > 0 && f.Prev != head && breakAt == 0 {
				breakAt = seq + 1
			}
			seq++
			rows = append(rows, []any{s.node, seq, f.Time, f.Type, f.Project, f.KeyID, f.Tool, string(line)})
			sum := sha256.Sum256(line)
			head = hex.EncodeToString(sum[:])
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_events"},
			[]string{"node", "seq", "time", "type", "project", "key_id", "tool", "line"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE audit_nodes SET seq = $2, head = $3 WHERE node = $1`, s.node, seq, head)
		return err
	})
	if err != nil {
		return fmt.Errorf("ship audit lines: %w", err)
	}
	if breakAt != 0 {
		s.log.Error("an audit line shipped does not follow the line before it in the shared chain (lines rotated out of the local log before they were shipped, or lost from it after): audit verify reports the break",
			"node", s.node, "line", breakAt)
	}
	s.seq, s.head = seq, head
	s.mu.Lock()
	s.shipped += int64(len(lines))
	s.mu.Unlock()
	return nil
}
