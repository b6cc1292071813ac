"""A trigger's schedule: a cron expression in a time zone, and how late a due time may fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import Field, PrivateAttr, field_validator

from hookrun.config.model.base import Frozen

#: Default of ``misfire_grace_s``: a due time found this late (every instance was down) fires.
DEFAULT_MISFIRE_GRACE_S = 60


class Schedule(Frozen):
    """``schedule: {cron: "0 9 * * MON", timezone: Europe/Helsinki, misfire_grace_s: 300}``.

    ``cron`` has five fields (minute hour day-of-month month day-of-week) and an optional sixth
    for seconds; its times are wall-clock times in ``timezone`` (an IANA name, default UTC).
    """

    cron: str
    timezone: str = "UTC"
    misfire_grace_s: int = Field(default=DEFAULT_MISFIRE_GRACE_S, ge=0)

    _zone: ZoneInfo = PrivateAttr()

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        fields = cron.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"{cron!r} is not a cron expression: give 5 fields (minute hour day month"
                " weekday) or 6 (and seconds)"
            )
        try:
            croniter(cron)
        except (CroniterError, ValueError) as exc:
            raise ValueError(f"{cron!r} is not a valid cron expression: {exc}") from None
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{name!r} is not a known time zone (an IANA name such as Europe/Helsinki)"
            ) from None
        return name

    def _post_init(self) -> None:
        self._zone = ZoneInfo(self.timezone)

    def next_after(self, after: datetime) -> datetime:
        """The first due time strictly after ``after`` (aware), in UTC."""
        return croniter(self.cron, after.astimezone(self._zone)).get_next(datetime).astimezone(UTC)

    def last_at_or_before(self, now: datetime) -> datetime:
        """The newest due time at or before ``now`` (aware), in UTC."""
        # croniter's get_prev is strictly before its start, whose microseconds it keeps.
        start = (now + timedelta(microseconds=1)).astimezone(self._zone)
        return croniter(self.cron, start).get_prev(datetime).astimezone(UTC)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.misfire_grace_s)
