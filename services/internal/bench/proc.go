package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in
// /proc/<pid>/stat; it is 100 on every Linux the project runs on.
const clockTicks = 100

// procStats are a process's resident memory and CPU time, from /proc.
type procStats struct {
	RSSBytes int64
	// AnonBytes and FileBytes split RSS into the heap and stacks, and the
	// pages of mapped files (the bolt files) the process has touched.
	AnonBytes, FileBytes int64
	CPUSecs              float64
}

// readProc reads the stats of process pid.
func readProc(pid int) (procStats, error) {
	var p procStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		for field, dst := range map[string]*int64{"VmRSS:": &p.RSSBytes, "RssAnon:": &p.AnonBytes, "RssFile:": &p.FileBytes} {
			if rest, ok := strings.CutPrefix(line, field); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return p, fmt.Errorf("%s %q: %w", field, rest, err)
				}
				*dst = kb << 10
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis are plain. utime and stime are fields 14 and 15.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return p, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return p, fmt.Errorf("/proc/%d/stat: bad CPU times", pid)
	}
	p.CPUSecs = float64(utime+stime) / clockTicks
	return p, nil
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
