"""The ids a bot's dispatcher answered out of order (inbox and webhook modes), kept
above a floor: every id below the floor is answered for good. A mixin of
`ChatDispatcher` (bots/actor/dispatch.py), which sets `_floor` and `_answered`; runs in
the actor's tasks.
"""

from __future__ import annotations


class AnsweredIds:
    """The floor and the answered ids above it, in webhook mode in two generations."""

    _floor: int | None
    _answered: set[int] | None
    #: webhook mode's older generation of answered ids and when the current one began
    #: (see `age_answered`); class defaults, so a dispatcher without them pays nothing
    _answered_old: set[int] | None = None
    _answered_since: float | None = None

    def lift_floor(self) -> None:
        """No older entry can come any more (a claim pass has run since this dispatcher
        started): answered ids below the watermark need not be kept."""
        if self._answered is not None:
            self._floor = None
            self._answered = set()
            self._answered_old = None

    def age_answered(self, now: float, window_s: float) -> None:
        """Webhook mode, where the floor is never lifted (an older update can always
        come: Telegram retries a chat's update while other chats' arrive): answered ids are
        kept for `window_s` to `window_s * 1.5`, not forever, in two generations. First the
        floor moves up over every id answered without a gap below it (all of those are
        answered for good); ids above a gap that outlive the window are forgotten, so a
        re-delivery of one that late is answered again rather than ever dropped."""
        answered = self._answered
        if answered is None or self._floor is None:
            return
        if self._answered_since is None:
            self._answered_since = now
            return
        if now - self._answered_since < window_s / 2:
            return
        old = self._answered_old
        both = answered | old if old else answered
        floor = self._floor
        while floor in both:
            floor += 1
        self._floor = floor
        self._answered_old = {i for i in answered if i >= floor} or None
        self._answered = set()
        self._answered_since = now

    def floor(self) -> int | None:
        return self._floor

    def _answer(self, update_id: int) -> None:
        """Keep `update_id` as answered, or, when it is the floor's own, move the floor up
        over it and every answered id above it with no gap (answered for good): the sets,
        and each progress record written, stay as small as the ids above a gap. Moved
        only every half window, they grew with all the traffic of minutes in webhook
        mode, and every record write encoded them all."""
        if update_id != self._floor:
            if self._answered is not None:
                self._answered.add(update_id)
            return
        floor = update_id + 1
        answered, old = self._answered, self._answered_old
        while True:
            if answered and floor in answered:
                answered.discard(floor)
            elif old and floor in old:
                old.discard(floor)
            else:
                break
            floor += 1
        self._floor = floor
