"""EC2's query protocol for VM import: ImportImage, CancelImportTask, DescribeImportImageTasks.

Shapes and member names from the current EC2 model (botocore 1.44.x's ec2 2016-11-15):
ImportImage's request is read by ``validation``; its answer is ImportImageResult
(``importTaskId``, ``status``, ``statusMessage``, ``progress``, ``description``...,
``snapshotDetailSet``, ``tagSet``). CancelImportTask takes ``ImportTaskId`` (and
``CancelReason``) and answers ``importTaskId``, ``previousState``, ``state``.
DescribeImportImageTasks takes ``ImportTaskId.N``, ``Filters.N.Name`` /
``Filters.N.Value.M`` (as botocore sends them; ``Filter.N`` is read too), ``MaxResults``
and ``NextToken`` (an ``Integer`` and a ``String``: the model states no range and does
not forbid combining MaxResults with ImportTaskIds, so neither does the emulator; without
MaxResults one page holds all), ``DryRun``; it answers ``importImageTaskSet`` of
``item``s and ``nextToken``. The model documents only the ``task-state`` filter;
``tag:KEY`` and ``tag-key`` are EC2's usual tag filters, served because issue 19 asks
for them: whether EC2 honours them on this call is not documented (a guess).
Errors are EC2's ``<Response><Errors><Error>`` shape with a ``RequestID``, as botocore's
ec2 parser reads them. Naming an ID that does not exist fails the whole call, as EC2's
describe calls do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ibimport.emulator.ec2.listing import STATE_FILTER, DescribedTask, TagFilter
from ibimport.emulator.ec2.models import ImportTasks
from ibimport.emulator.ec2.validation import read_import_image
from ibimport.emulator.exceptions import (
    AccessDeniedException,
    AuthFailure,
    CallRateLimitExceededException,
    DryRunOperation,
    ExpiredTokenException,
    IncompleteSignatureException,
    InternalError,
    InvalidAction,
    InvalidParameterValue,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    RequestLimitExceeded,
    ServiceError,
    ServiceException,
    ServiceUnavailableException,
    UnauthorizedOperation,
    Unavailable,
    UnrecognizedClientException,
)
from ibimport.emulator.query import QueryCall, QueryService, element, filters, numbered

__all__ = [
    "EC2",
    "cancel_import_task",
    "describe_import_image_tasks",
    "import_image",
    "render_error",
]

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
VERSION = "2016-11-15"
_AUTH_ERRORS = (
    UnrecognizedClientException,
    InvalidSignatureException,
    IncompleteSignatureException,
    MissingAuthenticationTokenException,
    ExpiredTokenException,
)


def import_image(tasks: ImportTasks, call: QueryCall) -> bytes:
    """POST / Action=ImportImage: a task starts (or a ClientToken's task is answered again)."""
    request = read_import_image(call.params)
    task, _replay = tasks.import_image(call.scope, request)
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ImportImageResponse xmlns="{XMLNS}">'
        + element("requestId", call.request_id)
        + _task_members(tasks.view_started(task))
        + "</ImportImageResponse>"
    )
    return body.encode()


def cancel_import_task(tasks: ImportTasks, call: QueryCall) -> bytes:
    """POST / Action=CancelImportTask: an active task goes ``deleting``, then ``deleted``."""
    params = call.params
    task_id = params.get("ImportTaskId")
    if not task_id:
        raise InvalidParameterValue("The request must contain the parameter ImportTaskId.")
    if params.get("DryRun", "").lower() == "true":
        raise DryRunOperation()
    previous = tasks.cancel(call.scope, task_id)
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<CancelImportTaskResponse xmlns="{XMLNS}">'
        + element("requestId", call.request_id)
        + element("importTaskId", task_id)
        + element("previousState", previous.value)
        + element("state", "deleting")
        + "</CancelImportTaskResponse>"
    )
    return body.encode()


def _task_members(view: DescribedTask) -> str:
    """An ImportImageTask's (or ImportImageResult's) members, in the model's names."""
    echo = view.echo
    members = [
        element("importTaskId", view.task_id),
        element("status", view.status.value),
        element("statusMessage", view.message),
        element("progress", view.progress),
        element("imageId", view.image_id),
    ]
    for name in (
        "architecture",
        "description",
        "encrypted",
        "hypervisor",
        "kmsKeyId",
        "licenseType",
        "platform",
        "usageOperation",
        "bootMode",
    ):
        members.append(element(name, echo.get(name)))
    disks = echo.get("disks")
    if disks:
        members.append(
            "<snapshotDetailSet>"
            + "".join(f"<item>{_disk_detail(d, view)}</item>" for d in disks)
            + "</snapshotDetailSet>"
        )
    if view.tags:
        members.append(
            "<tagSet>"
            + "".join(
                f"<item>{element('key', k)}{element('value', v)}</item>"
                for k, v in view.tags.items()
            )
            + "</tagSet>"
        )
    return "".join(members)


def _disk_detail(detail: dict[str, Any], view: DescribedTask) -> str:
    bucket = detail.get("userBucket")
    return (
        element("diskImageSize", detail.get("diskImageSize"))
        + element("format", detail.get("format"))
        + element("url", detail.get("url"))
        + element("snapshotId", detail.get("snapshotId"))
        + element("status", view.status.value)
        + (
            "<userBucket>"
            + element("s3Bucket", bucket["s3Bucket"])
            + element("s3Key", bucket["s3Key"])
            + "</userBucket>"
            if bucket
            else ""
        )
    )


def _filters(params: Mapping[str, str]) -> tuple[frozenset[str] | None, TagFilter]:
    """``task-state``, ``tag:KEY`` and ``tag-key``; another name is refused."""
    states: frozenset[str] | None = None
    values: dict[str, frozenset[str]] = {}
    keys: frozenset[str] | None = None
    for name, given in filters(params).items():
        wanted = frozenset(given)
        if name == STATE_FILTER:
            states = wanted if states is None else states & wanted
        elif name.startswith("tag:") and len(name) > 4:
            values[name[4:]] = wanted
        elif name == "tag-key":
            keys = wanted
        else:
            raise InvalidParameterValue(f"The filter '{name}' is invalid")
    return states, TagFilter(values, keys)


def describe_import_image_tasks(tasks: ImportTasks, call: QueryCall) -> bytes:
    """POST / Action=DescribeImportImageTasks."""
    params = call.params
    if params.get("DryRun", "").lower() == "true":
        raise DryRunOperation()
    states, tags = _filters(params)
    views, token = tasks.describe(
        call.scope,
        numbered(params, "ImportTaskId"),
        states=states,
        tags=tags,
        max_results=_max_results(params.get("MaxResults")),
        next_token=params.get("NextToken"),
    )
    items = "".join(f"<item>{_task_members(view)}</item>" for view in views)
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<DescribeImportImageTasksResponse xmlns="{XMLNS}">'
        + element("requestId", call.request_id)
        + f"<importImageTaskSet>{items}</importImageTaskSet>"
        + element("nextToken", token)
        + "</DescribeImportImageTasksResponse>"
    )
    return body.encode()


def _max_results(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidParameterValue(
            f"Value ({value}) for parameter MaxResults is invalid. Expected a positive integer."
        )
    return number


def translate(exc: ServiceError) -> ServiceError:
    """The answer EC2 gives where the shared layers raised Image Builder's error."""
    if isinstance(exc, _AUTH_ERRORS):
        return AuthFailure()
    if isinstance(exc, AccessDeniedException):
        return UnauthorizedOperation()
    if isinstance(exc, CallRateLimitExceededException):
        return RequestLimitExceeded()
    if isinstance(exc, ServiceException):
        return InternalError()
    if isinstance(exc, ServiceUnavailableException):
        return Unavailable()
    return exc


def render_error(exc: ServiceError, request_id: str) -> tuple[int, bytes]:
    """EC2's error shape: ``Response/Errors/Error/{Code,Message}`` and ``RequestID``."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        + element("Code", exc.code)
        + element("Message", exc.message)
        + "</Error></Errors>"
        + element("RequestID", request_id)
        + "</Response>"
    )
    return exc.status, body.encode()


EC2 = QueryService(
    signing_name="ec2",
    regional=True,
    actions={
        "DescribeImportImageTasks": describe_import_image_tasks,
        "ImportImage": import_image,
        "CancelImportTask": cancel_import_task,
    },
    translate=translate,
    render_error=render_error,
    unknown_action=lambda action: InvalidAction(
        f"The action {action} is not valid for this web service."
    ),
)
