//go:build !linux

package netstackio

import "errors"

var errNotLinux = errors.New("netstackio: TUN devices and network namespaces need Linux")

// OpenTUN is only implemented on Linux.
func OpenTUN(name string, opts TUNOptions) (Device, error) { return nil, errNotLinux }

// InNetns is only implemented on Linux.
func InNetns(nsPath string, fn func() error) error { return errNotLinux }
