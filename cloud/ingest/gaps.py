"""Per-node sequence tracking: the highest seq seen and the ranges missing below it.

Pure logic here; the writer loads each node's state FOR UPDATE, applies `advance` and
writes the result back, so concurrent ingest processes agree."""

from __future__ import annotations

from dataclasses import dataclass, field

# Gaps a node may have open (recorded or young). A box that skips a seq after every event
# made 243,267 gap rows and a holes list of 78 MB that every batch read and wrote again;
# past this, its oldest gaps are written off (seq_gaps says so) and the rest stay exact.
MAX_OPEN_GAPS = 256
# A jump of more seqs than any box's outbox holds (its default budget keeps about 100,000
# events) is no loss of that many events: a box that lost or reset its numbering, or one
# sending a forged seq (2^63 - 1 put the county's missing-events figure at 9.2e18). The high
# mark moves on; the jump is reported, not counted as missing.
MAX_GAP = 10_000_000


@dataclass
class Gap:
    first: int
    last: int
    id: int | None = None  # its seq_gaps row, once it has one
    seen: float | None = None  # when it was first seen missing (epoch seconds)

    @property
    def closed(self) -> bool:
        return self.first > self.last


@dataclass
class NodeSequence:
    high: int | None
    gaps: list[Gap] = field(default_factory=list)
    new_gaps: list[Gap] = field(default_factory=list)
    changed_gaps: list[Gap] = field(default_factory=list)
    jumps: list[tuple[int, int]] = field(default_factory=list)  # (from, to) beyond MAX_GAP

    def skip(self, last: int) -> None:
        """Seqs above the high mark up to `last` have not come (yet): missing, or a jump."""
        assert self.high is not None
        if last - self.high - 1 > MAX_GAP:
            self.jumps.append((self.high, last))
        elif last > self.high + 1:
            gap = Gap(self.high + 1, last - 1)
            self.gaps.append(gap)
            self.new_gaps.append(gap)
        self.high = last


def advance(state: NodeSequence, seqs: list[int]) -> NodeSequence:
    """Account for newly stored seqs: above the high mark opens gaps for what was skipped;
    below it, a seq inside a gap shrinks, splits or closes it."""
    for seq in sorted(set(seqs)):
        if state.high is None:
            state.high = seq  # a node's first event: nothing known below it
            continue
        if seq > state.high:
            state.skip(seq)
            continue
        for gap in state.gaps:
            if gap.first <= seq <= gap.last:
                _fill(state, gap, seq)
                break
    return state


def announce(state: NodeSequence, last: int) -> NodeSequence:
    """The node says (in its health) it has given out seqs up to `last`: those above the
    high mark are missing until they come, as if a later event had arrived. Before the
    node's first event nothing is known below it, as in `advance`."""
    if state.high is not None and last > state.high:
        state.skip(last + 1)  # `last` itself is missing too
        state.high = last
    return state


def _fill(state: NodeSequence, gap: Gap, seq: int) -> None:
    if gap.first == seq:
        gap.first += 1
    elif gap.last == seq:
        gap.last -= 1
    else:
        # Split: the gap keeps its row for the lower part; the upper part is a new one,
        # missing since the same time.
        upper = Gap(seq + 1, gap.last, seen=gap.seen)
        gap.last = seq - 1
        state.gaps.append(upper)
        state.new_gaps.append(upper)
    if gap.id is not None and gap not in state.changed_gaps:
        state.changed_gaps.append(gap)
    if gap.closed:
        state.gaps.remove(gap)
        if gap in state.new_gaps:  # opened and closed within one batch: never recorded
            state.new_gaps.remove(gap)


def oldest_beyond(state: NodeSequence, most: int = MAX_OPEN_GAPS) -> list[Gap]:
    """Remove and return the node's lowest gaps beyond `most` open ones."""
    if len(state.gaps) <= most:
        return []
    state.gaps.sort(key=lambda gap: gap.first)
    excess = state.gaps[: len(state.gaps) - most]
    del state.gaps[: len(excess)]
    state.new_gaps = [g for g in state.new_gaps if g not in excess]
    return excess
