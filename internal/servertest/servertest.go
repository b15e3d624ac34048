// Package servertest runs the database servers that the tests of the
// shared stores need: a redis-server per test (so that a test may stop
// and restart it) and one PostgreSQL server per test process, with a
// database of its own for every test. Both are the real servers from the
// Debian packages (redis-server, postgresql of any version), started on loopback
// ports in temporary folders and stopped when the test (or, for
// PostgreSQL, the test process: see [Main]) ends. When a binary is
// missing the test fails saying what to install; scripts/test.sh installs
// them.
//
// PostgreSQL refuses to run as root: when the tests run as root, its
// processes run as the "postgres" system user that the Debian package
// creates, in a folder owned by that user.
package servertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 30 * time.Second

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lookPath finds a server binary or fails the test saying what to
// install.
func lookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err == nil {
			return name
		}
	} else if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is missing: install the Debian package %s (apt-get install %s), as scripts/test.sh does", name, pkg, pkg)
	return ""
}

// Redis is a redis-server run by one test.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts a redis-server on a free loopback port, without
// persistence, and stops it when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: lookPath(t, "redis-server", "redis-server"), dir: t.TempDir(), port: FreePort(t)}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start starts the server again after Stop, on the same port, empty.
// It returns once the server answers.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--protected-mode", "no", "--loglevel", "warning")
	cmd.SysProcAttr = procAttr(nil, true)
	out, err := os.Create(filepath.Join(r.dir, "redis.log"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(startTimeout)
	for {
		if err := Ping(r.Addr()); err == nil {
			return
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server did not answer within %v: %v\n%s", startTimeout, err, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pid is the process id of the running server, 0 when it is stopped.
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Stop kills the server (as a crash would) and waits for it to exit.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

// Ping sends PING to the Redis server at addr and expects PONG.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("answered %q", strings.TrimSpace(line))
	}
	return nil
}

// pgRoot is where Debian's postgresql-NN packages keep their programs,
// in NN/bin.
const pgRoot = "/usr/lib/postgresql"

// pgBin returns the bin folder of the newest PostgreSQL under root (the
// Debian package postgresql depends on the distribution's version: 15 in
// Debian 12, 17 in Debian 13), or "" when there is none.
func pgBin(root string) string {
	entries, _ := os.ReadDir(root)
	best, dir := -1, ""
	for _, e := range entries {
		v, err := strconv.Atoi(e.Name())
		if err != nil || v <= best {
			continue
		}
		bin := filepath.Join(root, e.Name(), "bin")
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err == nil {
			best, dir = v, bin
		}
	}
	return dir
}

// pgServer is the PostgreSQL server of the test process.
var pg struct {
	mu      sync.Mutex
	started bool
	err     error
	dir     string
	port    int
	cmd     *exec.Cmd
	done    chan struct{}
	dbs     atomic.Int64
}

// Postgres returns the URL of a new, empty database on the PostgreSQL
// server of the test process, starting the server on first use. The
// package's TestMain must call [Main], which stops the server.
func Postgres(t testing.TB) string {
	t.Helper()
	base := PostgresServer(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), pg.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, base+"/postgres")
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return base + "/" + name
}

// PostgresServer returns the URL of the PostgreSQL server of the test
// process without a database name (append "/name"), starting it on
// first use.
func PostgresServer(t testing.TB) string {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if !pg.started {
		pg.started = true
		pg.err = startPostgres(t)
	}
	if pg.err != nil {
		t.Fatal(pg.err)
	}
	return "postgres://toolgate@127.0.0.1:" + strconv.Itoa(pg.port)
}

// startPostgres makes a cluster in a new temporary folder and starts its
// server. Called with pg.mu held.
func startPostgres(t testing.TB) error {
	bin := pgBin(pgRoot)
	if bin == "" {
		bin = filepath.Join(pgRoot, "NN", "bin")
	}
	initdb := lookPath(t, filepath.Join(bin, "initdb"), "postgresql")
	postgres := lookPath(t, filepath.Join(bin, "postgres"), "postgresql")
	dir, err := os.MkdirTemp("", "toolgate-pg-")
	if err != nil {
		return err
	}
	var runAs *account
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return errors.New("PostgreSQL does not run as root, and there is no postgres user to run it as: install the Debian package postgresql")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return err
		}
		runAs = &account{uid: uint32(uid), gid: uint32(gid)}
	}
	pg.dir = filepath.Join(dir, "data")
	init := exec.Command(initdb, "-D", pg.dir, "-U", "toolgate", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	init.SysProcAttr = procAttr(runAs, false)
	init.Dir = dir
	if out, err := init.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	pg.port = FreePort(t)
	cmd := exec.Command(postgres, "-D", pg.dir, "-p", strconv.Itoa(pg.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.SysProcAttr = procAttr(runAs, true)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return fmt.Errorf("start postgres: %w", err)
	}
	logf.Close()
	pg.cmd = cmd
	pg.done = make(chan struct{})
	go func() { cmd.Wait(); close(pg.done) }()
	deadline := time.Now().Add(startTimeout)
	url := "postgres://toolgate@127.0.0.1:" + strconv.Itoa(pg.port) + "/postgres"
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-pg.done:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			stopPostgres()
			return fmt.Errorf("postgres exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			stopPostgres()
			return fmt.Errorf("postgres did not accept connections within %v: %v\n%s", startTimeout, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopPostgres stops the server (fast shutdown) and removes its folder.
// Called with pg.mu held.
func stopPostgres() {
	if pg.cmd != nil {
		pg.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-pg.done:
		case <-time.After(10 * time.Second):
			pg.cmd.Process.Kill()
			<-pg.done
		}
		pg.cmd = nil
	}
	if pg.dir != "" {
		os.RemoveAll(filepath.Dir(pg.dir))
		pg.dir = ""
	}
}

// Main runs the tests of m, stops the PostgreSQL server if a test started
// it, and returns m's exit code: TestMain calls os.Exit(servertest.Main(m)),
// or hands the code on to another check.
func Main(m *testing.M) int {
	code := m.Run()
	pg.mu.Lock()
	stopPostgres()
	pg.mu.Unlock()
	return code
}
