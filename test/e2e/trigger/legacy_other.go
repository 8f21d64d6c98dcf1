//go:build !amd64

package main

import "errors"

var errNoLegacyOpen = errors.New("this architecture has no open(2) or creat(2): only openat")

func legacyOpen(string, int) (int, error) { return -1, errNoLegacyOpen }

func legacyCreat(string) (int, error) { return -1, errNoLegacyOpen }
