package failover

// flowTable holds the detector's flows, bounded: when it is full, a new
// flow evicts an old one, least recently active first among flows that are
// cheap to forget (idle: no unacknowledged client data; or half-open:
// never acknowledged by the server), then among the rest. So a flood of
// new or idle flows cannot push out the flows whose retransmissions would
// show an outage, and the detector never ignores a new flow: it forgets
// one whose loss matters least, and counts it (Stats.FlowsEvicted).
//
// Entries live in a slab, indexed by a map; two intrusive LRU lists (most
// recent at the head) order them. Every operation is O(1).
type flowTable[K comparable] struct {
	idx   map[K]int32
	ents  []flowEntry[K]
	free  []int32
	lists [2]lruList // listCheap, listValued
}

const (
	listCheap  = 0
	listValued = 1
	none       = int32(-1)
)

type flowEntry[K comparable] struct {
	key        K
	st         flowState
	prev, next int32
	list       int8
	used       bool
}

type lruList struct {
	head, tail int32
	n          int
}

func newFlowTable[K comparable]() *flowTable[K] {
	t := &flowTable[K]{idx: make(map[K]int32)}
	for i := range t.lists {
		t.lists[i] = lruList{head: none, tail: none}
	}
	return t
}

func (t *flowTable[K]) len() int { return len(t.idx) }

func (t *flowTable[K]) lookup(k K) (int32, bool) {
	i, ok := t.idx[k]
	return i, ok
}

// insert adds k with state st at the head of the cheap list and returns
// its index. The caller has made room.
func (t *flowTable[K]) insert(k K, st flowState) int32 {
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		t.ents = append(t.ents, flowEntry[K]{})
		i = int32(len(t.ents) - 1)
	}
	t.ents[i] = flowEntry[K]{key: k, st: st, used: true, list: listCheap, prev: none, next: none}
	t.idx[k] = i
	t.pushHead(i)
	return i
}

// touch marks entry i most recently active, on the list its state calls
// for.
func (t *flowTable[K]) touch(i int32) {
	e := &t.ents[i]
	t.unlink(i)
	e.list = listCheap
	if e.st.outstanding && e.st.srvSeen {
		e.list = listValued
	}
	t.pushHead(i)
}

// remove deletes entry i.
func (t *flowTable[K]) remove(i int32) {
	t.unlink(i)
	delete(t.idx, t.ents[i].key)
	t.ents[i] = flowEntry[K]{}
	t.free = append(t.free, i)
}

// victim returns the entry to evict: the least recently active cheap one,
// else the least recently active one.
func (t *flowTable[K]) victim() int32 {
	if t.lists[listCheap].tail != none {
		return t.lists[listCheap].tail
	}
	return t.lists[listValued].tail
}

func (t *flowTable[K]) pushHead(i int32) {
	e := &t.ents[i]
	l := &t.lists[e.list]
	e.prev, e.next = none, l.head
	if l.head != none {
		t.ents[l.head].prev = i
	}
	l.head = i
	if l.tail == none {
		l.tail = i
	}
	l.n++
}

func (t *flowTable[K]) unlink(i int32) {
	e := &t.ents[i]
	l := &t.lists[e.list]
	if e.prev != none {
		t.ents[e.prev].next = e.next
	} else {
		l.head = e.next
	}
	if e.next != none {
		t.ents[e.next].prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = none, none
	l.n--
}
