"""A trigger's `schedule`: cron and time zone checked at load, due times in the zone's wall clock."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from hookrun.config import ConfigError, HookrunConfig

Parse = Callable[[dict[str, Any]], HookrunConfig]


def scheduled(parse: Parse, data: dict, **schedule: Any) -> HookrunConfig:
    data["triggers"][0]["schedule"] = schedule
    return parse(data)


def error_of(parse: Parse, data: dict, **schedule: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        scheduled(parse, data, **schedule)
    return str(caught.value)


class TestValidation:
    def test_a_valid_schedule_loads_with_its_defaults(self, parse: Parse, data: dict) -> None:
        config = scheduled(parse, data, cron="0 9 * * MON", timezone="Europe/Helsinki")
        schedule = config.triggers[0].schedule
        assert schedule is not None
        assert (schedule.cron, schedule.timezone, schedule.misfire_grace_s) == (
            "0 9 * * MON",
            "Europe/Helsinki",
            60,
        )

    def test_a_bad_cron_names_the_field(self, parse: Parse, data: dict) -> None:
        message = error_of(parse, data, cron="61 * * * *")
        assert message.startswith("hookrun.yaml: triggers[0].schedule.cron: ")
        assert "'61 * * * *' is not a valid cron expression" in message

    def test_a_cron_with_the_wrong_number_of_fields_says_how_many(
        self, parse: Parse, data: dict
    ) -> None:
        message = error_of(parse, data, cron="every monday")
        assert "triggers[0].schedule.cron: " in message
        assert "give 5 fields" in message

    def test_an_unknown_time_zone_names_the_field(self, parse: Parse, data: dict) -> None:
        message = error_of(parse, data, cron="0 9 * * *", timezone="Europe/Helsinkii")
        assert "hookrun.yaml: triggers[0].schedule.timezone: " in message
        assert "'Europe/Helsinkii' is not a known time zone" in message

    def test_a_negative_grace_is_refused(self, parse: Parse, data: dict) -> None:
        message = error_of(parse, data, cron="0 9 * * *", misfire_grace_s=-1)
        assert "triggers[0].schedule.misfire_grace_s: " in message

    def test_unknown_keys_are_refused(self, parse: Parse, data: dict) -> None:
        message = error_of(parse, data, cron="0 9 * * *", every="day")
        assert "triggers[0].schedule.every: " in message


class TestDueTimes:
    def test_times_are_wall_clock_times_of_the_zone(self, parse: Parse, data: dict) -> None:
        config = scheduled(parse, data, cron="0 9 * * MON", timezone="Europe/Helsinki")
        schedule = config.triggers[0].schedule
        assert schedule is not None
        # 09:00 in Helsinki is 07:00 UTC in winter (EET) and 06:00 UTC in summer (EEST).
        after = datetime(2026, 12, 6, tzinfo=UTC)
        assert schedule.next_after(after) == datetime(2026, 12, 7, 7, tzinfo=UTC)
        summer = datetime(2026, 7, 5, tzinfo=UTC)
        assert schedule.next_after(summer) == datetime(2026, 7, 6, 6, tzinfo=UTC)

    def test_a_sixth_field_holds_seconds(self, parse: Parse, data: dict) -> None:
        config = scheduled(parse, data, cron="* * * * * */10")
        schedule = config.triggers[0].schedule
        assert schedule is not None
        now = datetime(2026, 12, 6, 9, 0, 25, 500_000, tzinfo=UTC)
        assert schedule.next_after(now) == datetime(2026, 12, 6, 9, 0, 30, tzinfo=UTC)
        assert schedule.last_at_or_before(now) == datetime(2026, 12, 6, 9, 0, 20, tzinfo=UTC)

    def test_a_due_time_itself_is_at_or_before_it(self, parse: Parse, data: dict) -> None:
        config = scheduled(parse, data, cron="0 9 * * *")
        schedule = config.triggers[0].schedule
        assert schedule is not None
        due = datetime(2026, 12, 6, 9, tzinfo=UTC)
        assert schedule.last_at_or_before(due) == due
        assert schedule.next_after(due) == datetime(2026, 12, 7, 9, tzinfo=UTC)
