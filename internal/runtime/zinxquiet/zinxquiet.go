// Package zinxquiet keeps zinx v1.2.8 from printing
//
//	[ERROR]zconf.go:151: Config File <cwd>/conf/zinx.json is not exist!!
//
// at the start of every process that links it, without any file on disk.
//
// zinx's zconf package reads ZINX_CONFIG_FILE_PATH (default
// <cwd>/conf/zinx.json) in its init function and logs that error when the
// file is missing; an empty or invalid file makes it panic. zcluster
// configures zinx itself (internal/runtime/zinxkit), so the file only needs to hold
// "{}". This package's init, which runs before zconf's, hands zinx such a
// file without writing one: it writes "{}" into a pipe, closes the write
// end, and points ZINX_CONFIG_FILE_PATH at the read end through
// /proc/self/fd/N (or /dev/fd/N). zconf reads "{}" from it and stays quiet.
// Done, called from the init of internal/runtime/zinxkit (which imports zconf and so
// runs after it), closes the pipe and removes the variable again, so child
// processes do not inherit a path that means nothing to them.
//
// # Why this init runs before zconf's
//
// Go (1.21 and later) initializes packages in import-path order among those
// whose imports are all initialized. "github.com/aceld/zinx/zconf" sorts
// before "github.com/zcluster/...", so a package of ours does not run first
// just because it is imported first. This package, however, imports only
// "os", while zconf imports "testing" (and "time", "reflect", ...), which
// sort after "github.com/zcluster/..." and need "os" themselves: the moment
// "os" is initialized this package is the first ready one in the order, long
// before "testing" and therefore zconf. TestBinaryFromTempDir in
// cmd/zcluster checks it on a built binary run from an empty directory
// (GODEBUG=inittrace=1 shows the order). Keep this package's imports to
// "os" alone.
//
// Nothing is changed when ZINX_CONFIG_FILE_PATH names an existing file, or
// is unset and conf/zinx.json exists in the working directory: a user's zinx
// configuration keeps working as zinx documents it. A variable naming a
// missing file (say a stale export of the conf/zinx.json zcluster used to
// ship) is treated as unset, then restored. On systems without
// /proc/self/fd or /dev/fd (Windows) the package does nothing.
package zinxquiet

import "os"

// envKey is zconf.EnvConfigFilePathKey (not imported: see the package doc).
const envKey = "ZINX_CONFIG_FILE_PATH"

// state is what init set up for Done to undo. It is process-wide by nature:
// zinx reads a process-wide environment variable once, at init.
var state struct {
	pipe    *os.File // read end of the pipe holding "{}", nil if unused
	value   string   // the value init gave envKey
	user    string   // the value envKey had before, if userSet
	userSet bool
}

func init() {
	user, set := os.LookupEnv(envKey)
	if set && user != "" {
		if _, err := os.Stat(user); err == nil {
			return // the user's zinx configuration
		}
		// A variable naming a missing file would only make zinx complain
		// and fall back to its defaults: give it "{}" instead, and put the
		// variable back in Done.
	} else if _, err := os.Stat("conf/zinx.json"); err == nil {
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		return
	}
	_, werr := w.WriteString("{}")
	cerr := w.Close()
	if werr != nil || cerr != nil {
		_ = r.Close()
		return
	}
	for _, dir := range fdDirs {
		path := dir + "/" + itoa(r.Fd())
		if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			continue
		}
		if os.Setenv(envKey, path) != nil {
			break
		}
		state.pipe, state.value = r, path
		state.user, state.userSet = user, set
		return
	}
	_ = r.Close()
}

// Done undoes what init did once zinx has read its configuration: it closes
// the pipe and, if ZINX_CONFIG_FILE_PATH still holds the value init gave it,
// puts back what it was before (unset, or the missing file it named). Call it from the init of a package that imports
// github.com/aceld/zinx/zconf (zinxkit does). Safe to call more than once;
// init runs on one goroutine, so no lock is needed for calls from init
// functions.
func Done() {
	if state.pipe == nil {
		return
	}
	if os.Getenv(envKey) == state.value {
		if state.userSet {
			_ = os.Setenv(envKey, state.user)
		} else {
			_ = os.Unsetenv(envKey)
		}
	}
	_ = state.pipe.Close()
	state.pipe, state.value = nil, ""
}

// itoa formats a file descriptor without importing strconv.
func itoa(fd uintptr) string {
	if fd == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for fd > 0 {
		i--
		b[i] = byte('0' + fd%10)
		fd /= 10
	}
	return string(b[i:])
}
