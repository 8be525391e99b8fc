// Command sdnkvs is the SDN-KVS middlebox, key-value store, testbed, demo and
// benchmarks in one binary.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/alecthomas/kong"
	"github.com/sdnkvs/sdnkvs/failover/prober"
)

// Globals are flags shared by every subcommand.
type Globals struct {
	LogLevel slog.Level `name:"log-level" default:"info" help:"Log level: debug, info, warn, error."`
}

// CLI is the whole command-line grammar. Each subcommand lives in its own
// file as a type with a Run(*Globals) error method.
type CLI struct {
	Globals

	Middlebox MiddleboxCmd `cmd:"" help:"Run the edge middlebox: forks critical connections to every DC, anycasts the rest, fails over."`
	Kvs       KvsCmd       `cmd:"" help:"Run a key-value store node (or a local cluster of nodes)."`

	// The testbed, the demo and the benchmarks need Linux (network
	// namespaces, veth, TUN): cli_linux.go; elsewhere there are none.
	testbedCommands `embed:""`
}

func parser(cli *CLI, opts ...kong.Option) (*kong.Kong, error) {
	opts = append([]kong.Option{
		kong.Name("sdnkvs"),
		kong.Description("SDN-KVS: a disaster-tolerant key-value store behind a transparent TCP middlebox."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"ready_port": strconv.Itoa(prober.ReadyPort)},
	}, opts...)
	return kong.New(cli, opts...)
}

func main() {
	var cli CLI
	p, err := parser(&cli)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, err := p.Parse(os.Args[1:])
	p.FatalIfErrorf(err)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cli.LogLevel})))
	err = ctx.Run(&cli.Globals)
	ctx.FatalIfErrorf(err)
}
