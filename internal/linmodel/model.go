// Package linmodel is the porcupine (github.com/anishathalye/porcupine)
// model the linearizability tests share: the kvs package's tests against
// a cluster and bench/scenario/lintest's through the VIP. It is a map of
// registers partitioned by key, with GET, SET and DEL.
package linmodel

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Op is an operation's kind.
type Op byte

// The operations: Get reads a key, Set writes a value, Del removes the key.
const (
	Get Op = 'g'
	Set Op = 's'
	Del Op = 'd'
)

// Input is one operation. Values are unique and non-empty, so "" means
// absent; a Get's output is the string it read ("" when absent).
type Input struct {
	Op    Op
	Key   string
	Value string // of a Set
}

// Model checks histories of Input operations with string outputs, one
// partition per key (in key order).
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(Input).Key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], o)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, st := input.(Input), state.(string)
		switch in.Op {
		case Get:
			return output.(string) == st, st
		case Set:
			return true, in.Value
		default:
			return true, ""
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(Input)
		switch in.Op {
		case Get:
			return fmt.Sprintf("get(%s) -> %q", in.Key, output)
		case Set:
			return fmt.Sprintf("set(%s, %s)", in.Key, in.Value)
		}
		return fmt.Sprintf("del(%s)", in.Key)
	},
}
