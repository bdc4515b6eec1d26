//go:build !unix

package zinxquiet

// fdDirs is empty where no path names an open file by descriptor: the
// package does nothing there.
var fdDirs []string
