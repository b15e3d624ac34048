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
// (rotation keeps audit.maxFiles files).
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
// chain in the database.
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
	for _, name := range names {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if first == nil && head == "" {
			first = f
			break
		}
		if head == "" {
			f.Close()
			continue
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
		if first == nil {
			first = f // the oldest: where to start when head is not found
		} else {
			f.Close()
		}
	}
	if first == nil {
		return nil // no local log yet
	}
	if head != "" {
		if off, _ := first.Seek(0, io.SeekCurrent); off == 0 {
			s.log.Error("the last line shipped is no longer in the local audit log (rotated away or removed); shipping from the oldest line kept: the shared chain will show the gap",
				"node", s.node, "head", head)
		}
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
}

// ship adds lines to the node's chain in one transaction, after checking
// that the chain's head is where this shipper left it: two replicas
// configured with one node name would interleave their lines.
func (s *Shipper) ship(ctx context.Context, lines [][]byte) error {
	var seq int64
	var head string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
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
	s.seq, s.head = seq, head
	s.mu.Lock()
	s.shipped += int64(len(lines))
	s.mu.Unlock()
	return nil
}
