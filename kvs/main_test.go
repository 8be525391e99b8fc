package kvs

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// Clients of nodes the tests kill on purpose would log every failed dial.
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}
