// Package proctest runs a command's real main as a child process for its
// tests: the test binary re-executes itself with an environment variable that
// makes TestMain call main instead of the tests, so signal handling, exit
// codes and log lines are those of the real program, with no separate build.
package proctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RunMainIf runs main and exits when the environment variable is "1" (the
// child); otherwise it runs the tests. Call it from TestMain.
func RunMainIf(m *testing.M, envVar string, main func()) {
	if os.Getenv(envVar) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Process is a command running as a child of the test binary.
type Process struct {
	name   string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	// Addr is the address from the process's "listening" log line.
	Addr string
	// mu guards logs, the stdout lines read so far.
	mu   sync.Mutex
	logs []string
	// readDone closes when stdout reaches EOF, that is when the process exits.
	readDone chan struct{}
}

// Start runs the test binary with env added to the environment (env must
// include the variable that RunMainIf checks) and waits up to timeout for the
// "listening" line. The process is killed when the test ends if it still runs.
func Start(t *testing.T, name string, timeout time.Duration, env ...string) *Process {
	t.Helper()
	p := &Process{name: name, readDone: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start the %s: %v", name, err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.readDone
			_ = p.cmd.Wait()
		}
	})
	listening := make(chan string, 1)
	go func() {
		defer close(p.readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			var entry struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "listening" {
				listening <- entry.Addr
			}
		}
	}()
	select {
	case p.Addr = <-listening:
		return p
	case <-p.readDone:
		t.Fatalf("the %s exited before listening; stderr:\n%s", name, p.Stderr())
	case <-time.After(timeout):
		t.Fatalf("no listening line from the %s after %v; logs:\n%s", name, timeout, p.LogText())
	}
	return nil
}

// Signal sends sig to the process.
func (p *Process) Signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal the %s: %v", p.name, err)
	}
}

// Stderr is what the process wrote to stderr.
func (p *Process) Stderr() string { return p.stderr.String() }

// LogText is every stdout line read so far.
func (p *Process) LogText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// LogLines decodes every stdout line read so far; a line that is not JSON
// fails the test.
func (p *Process) LogLines(t *testing.T) []map[string]any {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]map[string]any, 0, len(p.logs))
	for _, line := range p.logs {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Wait waits for the process to exit and returns its exit code.
func (p *Process) Wait(t *testing.T) int {
	t.Helper()
	<-p.readDone
	err := p.cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("wait for the %s: %v", p.name, err)
	}
	return p.cmd.ProcessState.ExitCode()
}
