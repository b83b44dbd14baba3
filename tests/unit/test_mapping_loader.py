"""Loading mapping files: the shipped default, and every fault reported as file:line: key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adapter.errors import MappingError, MappingFileError
from adapter.mapping import (
    TEMPLATE_FIELDS,
    MappingConfig,
    Offset,
    Template,
    load_mapping,
    load_mapping_text,
)

DEFAULT = Path(__file__).resolve().parents[2] / "mappings" / "default.yaml"
NAME = "mappings/test.yaml"

MINIMAL = textwrap.dedent(
    """\
    version: 1
    defaults:
      lead:
        title: "{eventType} - {name}"
        stage: CONTACTED
        source: BookMe
        lead_score: 60
      meeting:
        subject: "{eventType} - Scheduled"
        description: |-
          Datum: {date}
          Telefon: {phone}
    event_types:
      workshop:
        lead:
          estimated_value: 15000
        tasks:
          - key: prep-info
            title: Send workshop prep info
            offset: -7d
            skip_if_past: true
          - key: follow-up
            title: Workshop follow-up
            offset: +1d
    """
)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def load_error(text: str) -> str:
    """The message ``load_mapping_text`` refuses ``text`` with."""
    with pytest.raises(MappingFileError) as caught:
        load_mapping_text(text, NAME)
    return str(caught.value)


def test_default_mapping_loads_with_the_seed_defaults() -> None:
    """mappings/default.yaml holds contract §4's defaults for both seed event types."""
    mapping = load_mapping(DEFAULT)

    assert isinstance(mapping, MappingConfig)
    assert list(mapping.event_types) == ["workshop", "30min-consultation"]
    workshop = mapping.event_type("workshop")
    consultation = mapping.event_type("30min-consultation")
    assert workshop.lead.stage == consultation.lead.stage == "CONTACTED"
    assert workshop.lead.source == "BookMe"
    assert (workshop.lead.estimated_value, consultation.lead.estimated_value) == (15000, 5000)
    assert workshop.lead.lead_score == consultation.lead.lead_score == 60
    assert [(t.key, t.offset, t.priority, t.skip_if_past) for t in workshop.tasks] == [
        ("prep-info", Offset(days=-7), "high", True),
        ("follow-up", Offset(days=1), "medium", False),
    ]
    assert [(t.key, t.offset, t.priority) for t in consultation.tasks] == [
        ("summary", Offset(minutes=120), "high"),
    ]
    for settings in (workshop, consultation):
        lifecycle = settings.lifecycle
        assert lifecycle.on_reschedule.meeting_outcome == "RESCHEDULED"
        assert (lifecycle.on_cancel.lead_stage, lifecycle.on_cancel.tasks) == ("LOST", [])
        assert lifecycle.on_no_show.lead_stage is None
        assert lifecycle.on_no_show.cancel_open_tasks is True
        assert [(t.key, t.offset, t.anchor, t.priority) for t in lifecycle.on_no_show.tasks] == [
            ("no-show-reach-out", Offset(minutes=60), "end", "high"),
        ]


def test_event_type_overrides_defaults_field_by_field() -> None:
    """An event type's lead keys replace the default's; the keys it omits are inherited."""
    mapping = load_mapping_text(MINIMAL, NAME)

    lead = mapping.event_type("workshop").lead

    assert lead.estimated_value == 15000
    assert lead.lead_score == 60
    assert lead.stage == "CONTACTED"
    assert mapping.defaults.lead.estimated_value == 0


def test_unknown_event_type_lookup_is_a_mapping_error() -> None:
    """Asking for an unmapped eventType names it and the known ones."""
    mapping = load_mapping_text(MINIMAL, NAME)
    with pytest.raises(MappingError, match=r"eventType 'yoga' is not in the mapping \(known: wor"):
        mapping.event_type("yoga")


def test_template_list_falls_back_to_the_first_fully_filled_candidate() -> None:
    """["{eventType} - {company}", "{eventType} - {name}"] uses the company only when given."""
    title = load_mapping(DEFAULT).defaults.lead.title
    values = dict.fromkeys(TEMPLATE_FIELDS, "") | {"eventType": "workshop", "name": "Ann"}

    assert title.render(values) == "workshop - Ann"
    assert title.render(values | {"company": "Acme"}) == "workshop - Acme"


def test_load_mapping_names_the_path_in_errors(tmp_path: Path) -> None:
    """load_mapping reports faults against the path it was given."""
    path = tmp_path / "broken.yaml"
    path.write_text(MINIMAL.replace("offset: +1d", "offset: soon"), encoding="utf-8")

    with pytest.raises(MappingFileError) as caught:
        load_mapping(path)

    line = line_of(MINIMAL, "offset: +1d")
    assert str(caught.value) == (
        f"{path}:{line}: event_types.workshop.tasks[1].offset: "
        "invalid offset 'soon' (use e.g. -7d, +2h, 30m)"
    )


def test_missing_file_is_a_mapping_file_error(tmp_path: Path) -> None:
    """A file that cannot be read is reported with its path, not as an OSError."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(MappingFileError, match=r"absent\.yaml: cannot read"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        pytest.param(
            "offset: -7d",
            "offset: -7x",
            "offset: -7x",
            "event_types.workshop.tasks[0].offset: invalid offset '-7x' (use e.g. -7d, +2h, 30m)",
            id="bad-offset",
        ),
        pytest.param(
            "    stage: CONTACTED",
            "    stage: CONTACTED\n    titel: oops",
            "titel:",
            "defaults.lead.titel: unknown key 'titel' (did you mean 'title'? allowed: title, ",
            id="unknown-key",
        ),
        pytest.param(
            "version: 1",
            "version: 1\nlifecycle: {}",
            "lifecycle:",
            "lifecycle: unknown key 'lifecycle' (allowed: version, defaults, event_types)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "lead_score: 60",
            "lead_score: sixty",
            "lead_score:",
            "defaults.lead.lead_score: Input should be a valid integer, got the string 'sixty'",
            id="wrong-type",
        ),
        pytest.param(
            "lead_score: 60",
            "lead_score: 101",
            "lead_score:",
            "defaults.lead.lead_score: Input should be less than or equal to 100",
            id="out-of-range",
        ),
        pytest.param(
            "title: Workshop follow-up",
            "title: Follow up {fistName}",
            "{fistName}",
            "event_types.workshop.tasks[1].title: unknown placeholder '{fistName}' "
            "(did you mean '{firstName}'? known: eventType, ",
            id="unknown-placeholder",
        ),
        pytest.param(
            "Telefon: {phone}",
            "Telefon: {phone.upper}",
            "{phone.upper}",
            "defaults.meeting.description: unknown placeholder '{phone.upper}'",
            id="placeholder-in-block-names-its-own-line",
        ),
        pytest.param(
            "Telefon: {phone}",
            "Telefon: {phone!r:>5}",
            "{phone!r:>5}",
            "defaults.meeting.description: placeholder '{phone!r:>5}': format specs and "
            "conversions are not supported",
            id="format-spec",
        ),
        pytest.param(
            'title: "{eventType} - {name}"',
            'title: ["{eventType} - {company}", "{eventType} - {name"]',
            "title: [",
            "defaults.lead.title[1]: invalid template: expected '}' before end of string",
            id="unbalanced-brace-in-fallback",
        ),
        pytest.param(
            "key: follow-up",
            "key: prep-info  # again",
            "# again",
            "event_types.workshop.tasks[1].key: duplicate task key 'prep-info' "
            "(first used by tasks[0])",
            id="duplicate-task-key",
        ),
        pytest.param(
            "    stage: CONTACTED",
            "    stage: CONTACTED\n    stage: WON",
            "stage: WON",
            "defaults.lead.stage: duplicate key (first on line 5)",
            id="duplicate-yaml-key",
        ),
        pytest.param(
            "    stage: CONTACTED\n",
            "",
            "  lead:",
            "defaults.lead.stage: required key is missing",
            id="missing-key",
        ),
        pytest.param(
            "estimated_value: 15000",
            "estimated_value: null",
            "estimated_value:",
            "event_types.workshop.lead.estimated_value: must not be null; leave the key out",
            id="null-override",
        ),
        pytest.param(
            "skip_if_past: true",
            "skip_if_past: 'yes'",
            "skip_if_past:",
            "event_types.workshop.tasks[0].skip_if_past: Input should be a valid boolean, "
            "got the string 'yes'",
            id="strict-bool",
        ),
        pytest.param(
            "offset: +1d\n",
            "offset: +1d\n        priority: urgent\n",
            "priority: urgent",
            "event_types.workshop.tasks[1].priority: Input should be 'low', 'medium' or 'high'",
            id="bad-priority",
        ),
        pytest.param(
            "key: follow-up",
            "key: Follow_Up",
            "key: Follow_Up",
            "event_types.workshop.tasks[1].key: 'Follow_Up' is not a slug",
            id="bad-slug",
        ),
        pytest.param(
            "version: 1",
            "version: 2",
            "version:",
            "version: Input should be 1, got the number 2",
            id="unknown-version",
        ),
    ],
)
def test_each_fault_names_file_line_and_key_path(
    old: str, new: str, needle: str, expected: str
) -> None:
    """Every kind of fault is reported as <file>:<line>: <key path>: <problem>."""
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)

    message = load_error(text)

    assert message.startswith(f"{NAME}:{line_of(text, needle)}: {expected}"), message


LIFECYCLE = MINIMAL.replace(
    "event_types:\n",
    textwrap.dedent(
        """\
          lifecycle:
            on_reschedule:
              meeting_outcome: RESCHEDULED
            on_cancel:
              lead_stage: LOST
              tasks: []
            on_no_show:
              lead_stage: null
              cancel_open_tasks: true
              tasks:
                - key: reach-out
                  title: Reach out after no-show
                  offset: +1h
                  anchor: end
        event_types:
          webinar:
            lifecycle:
              on_cancel:
                lead_stage: null
            tasks:
              - key: recording
                title: Send the recording
                offset: +30m
        """
    ),
)


def test_event_type_overrides_lifecycle_key_by_key() -> None:
    """An event type's lifecycle keys replace the default's, null stage included."""
    mapping = load_mapping_text(LIFECYCLE, NAME)

    webinar = mapping.event_type("webinar").lifecycle
    workshop = mapping.event_type("workshop").lifecycle

    assert (webinar.on_cancel.lead_stage, workshop.on_cancel.lead_stage) == (None, "LOST")
    assert webinar.on_cancel.tasks == workshop.on_cancel.tasks == []
    assert webinar.on_no_show == workshop.on_no_show == mapping.defaults.lifecycle.on_no_show


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        pytest.param(
            "      lead_stage: LOST",
            "      lead_stag: LOST",
            "lead_stag:",
            "defaults.lifecycle.on_cancel.lead_stag: unknown key 'lead_stag' "
            "(did you mean 'lead_stage'? allowed: lead_stage, tasks)",
            id="unknown-key",
        ),
        pytest.param(
            "    on_no_show:",
            "    on_noshow:",
            "on_noshow:",
            "defaults.lifecycle.on_noshow: unknown key 'on_noshow' (did you mean 'on_no_show'? "
            "allowed: on_reschedule, on_cancel, on_no_show)",
            id="unknown-section",
        ),
        pytest.param(
            "        lead_stage: null",
            "        stage: null",
            "    stage: null",
            "event_types.webinar.lifecycle.on_cancel.stage: unknown key 'stage' "
            "(did you mean 'lead_stage'? allowed: lead_stage, tasks)",
            id="unknown-key-in-override",
        ),
        pytest.param(
            "meeting_outcome: RESCHEDULED",
            "meeting_outcome: CANCELED",
            "meeting_outcome:",
            "defaults.lifecycle.on_reschedule.meeting_outcome: Input should be 'SCHEDULED', "
            "'RESCHEDULED' or 'COMPLETED', got the string 'CANCELED'",
            id="outcome-not-live",
        ),
        pytest.param(
            "meeting_outcome: RESCHEDULED",
            "meeting_outcome: rescheduled",
            "meeting_outcome:",
            "defaults.lifecycle.on_reschedule.meeting_outcome: Input should be 'SCHEDULED'",
            id="outcome-case",
        ),
        pytest.param(
            "lead_stage: LOST",
            "lead_stage: ''",
            "lead_stage: ''",
            "defaults.lifecycle.on_cancel.lead_stage: must not be blank",
            id="blank-stage",
        ),
        pytest.param(
            "lead_stage: LOST",
            "lead_stage: 7",
            "lead_stage: 7",
            "defaults.lifecycle.on_cancel.lead_stage: Input should be a valid string, "
            "got the number 7",
            id="stage-not-a-string",
        ),
        pytest.param(
            "cancel_open_tasks: true",
            "cancel_open_tasks: 'no'",
            "cancel_open_tasks:",
            "defaults.lifecycle.on_no_show.cancel_open_tasks: Input should be a valid boolean, "
            "got the string 'no'",
            id="strict-bool",
        ),
        pytest.param(
            "        lead_stage: null",
            "        tasks: null",
            "tasks: null",
            "event_types.webinar.lifecycle.on_cancel.tasks: must not be null; leave the key out",
            id="null-tasks-override",
        ),
        pytest.param(
            "offset: +1h",
            "offset: +1hour",
            "offset: +1hour",
            "defaults.lifecycle.on_no_show.tasks[0].offset: invalid offset '+1hour'",
            id="bad-lifecycle-task-offset",
        ),
        pytest.param(
            "key: recording",
            "key: reach-out  # clash",
            "# clash",
            "event_types.webinar.tasks[0].key: duplicate task key 'reach-out' in event type "
            "'webinar' (first used by defaults.lifecycle.on_no_show.tasks[0])",
            id="task-key-clashes-with-default-lifecycle-task",
        ),
        pytest.param(
            "      tasks: []",
            "      tasks:\n        - {key: reach-out, title: Call, offset: +1d}",
            "- key: reach-out",
            "defaults.lifecycle.on_no_show.tasks[0].key: duplicate task key 'reach-out' "
            "(first used by on_cancel.tasks[0])",
            id="cancel-and-no-show-tasks-share-a-key",
        ),
        pytest.param(
            "        lead_stage: null",
            "        lead_stage: null\n        tasks:\n"
            "          - {key: sorry, title: Sorry, offset: +1d}\n"
            "          - {key: sorry, title: Sorry again, offset: +2d}",
            "Sorry again",
            "event_types.webinar.lifecycle.on_cancel.tasks[1].key: duplicate task key 'sorry' "
            "(first used by tasks[0])",
            id="duplicate-key-within-lifecycle-tasks",
        ),
    ],
)
def test_each_lifecycle_fault_names_file_line_and_key_path(
    old: str, new: str, needle: str, expected: str
) -> None:
    """A bad lifecycle key, value or task key is reported as <file>:<line>: <key path>: ..."""
    assert old in LIFECYCLE
    text = LIFECYCLE.replace(old, new, 1)

    message = load_error(text)

    assert message.startswith(f"{NAME}:{line_of(text, needle)}: {expected}"), message


def test_yaml_syntax_error_names_file_and_line() -> None:
    """Broken YAML is reported at the line the parser stopped on."""
    text = MINIMAL.replace("lead_score: 60", "lead_score: [60")
    message = load_error(text)
    assert message.startswith(f"{NAME}:{line_of(text, 'meeting:')}: invalid YAML: ")


def test_empty_file_is_refused() -> None:
    """A file with nothing but comments is not a mapping."""
    assert load_error("# nothing here\n") == f"{NAME}:1: the mapping file is empty"


def test_non_mapping_root_is_refused() -> None:
    """A YAML list at the top is reported against the top level."""
    assert load_error("- workshop\n").startswith(f"{NAME}:1: (top level): Input should be")


def test_every_fault_is_reported_in_line_order() -> None:
    """Several faults give one message with a line each, sorted by line."""
    text = MINIMAL.replace("offset: +1d", "offset: later").replace("stage: CONTACTED", "stage: 7")

    lines = load_error(text).splitlines()

    assert [line.split(":")[1] for line in lines] == [
        str(line_of(text, "stage: 7")),
        str(line_of(text, "offset: later")),
    ]


def test_a_file_without_event_types_is_refused() -> None:
    """An empty event_types would quarantine every booking, so it is an error."""
    text = MINIMAL[: MINIMAL.index("event_types:")] + "event_types: {}\n"
    assert "event_types: Dictionary should have at least 1 item" in load_error(text)


def test_yaml_anchors_and_merge_keys_are_understood() -> None:
    """A task shared via &anchor and <<: merge loads, and a fault in it gets the anchor's line."""
    text = MINIMAL.replace("      - key: follow-up\n", "      - &later\n        key: follow-up\n")
    text += "  again:\n    tasks:\n      - <<: *later\n        priority: high\n"

    again = load_mapping_text(text, NAME).event_type("again")

    assert [(t.key, t.priority) for t in again.tasks] == [("follow-up", "high")]
    broken = text.replace("offset: +1d", "offset: tomorrow")
    assert f"{NAME}:{line_of(broken, 'tomorrow')}: event_types.again.tasks[0].offset" in (
        load_error(broken)
    )


def test_template_parse_keeps_escaped_braces() -> None:
    """{{ and }} stand for literal braces and are not placeholders."""
    template = Template.parse("{{literal}} {name}")
    assert template.fields == {"name"}


def test_dumped_mapping_validates_back_to_the_same_mapping() -> None:
    """model_dump(exclude_none=True) writes templates and offsets back as the file's text."""
    mapping = load_mapping(DEFAULT)
    dumped = mapping.model_dump(mode="json", exclude_none=True)

    assert dumped["event_types"]["workshop"]["tasks"][0]["offset"] == "-7d"
    assert MappingConfig.model_validate(dumped) == mapping


def test_the_default_mappings_commented_examples_are_valid_and_the_seed_unchanged() -> None:
    """The examples in mappings/default.yaml load once uncommented (so ops can turn them on
    as written), and commented they change nothing: the seed's plan stays as it was."""
    text = DEFAULT.read_text()
    assert text.count("#| ") >= 10
    enabled = load_mapping_text(text.replace("#| ", ""), "default.yaml (examples on)")
    default = load_mapping_text(text, "default.yaml")
    contact = enabled.defaults.contact.properties
    assert contact["lifecyclestage"].policy == "forward_only"
    assert contact["utm_campaign"].policy == "if_empty"
    assert enabled.defaults.lead.properties["budget"].policy == "always"
    assert enabled.defaults.owner is not None
    assert enabled.defaults.owner.round_robin is not None
    assert enabled.defaults.owner.keep_existing
    assert default.defaults.owner is None
    assert default.defaults.contact.properties == {}
    assert default.defaults.lead.properties == {}
