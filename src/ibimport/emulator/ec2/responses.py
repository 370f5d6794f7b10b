"""EC2's query protocol for DescribeImportImageTasks: parse the form, answer EC2's XML.

Shapes and member names from the current EC2 model (botocore 1.44.8's ec2 2016-11-15,
the same as the pinned one for this operation): ``ImportTaskId.N``, ``Filters.N.Name`` /
``Filters.N.Value.M`` (as botocore sends them; ``Filter.N`` is read too; only
``task-state`` is documented), ``MaxResults`` and ``NextToken`` (an ``Integer`` and a
``String``: the model states no range and does not forbid combining MaxResults with
ImportTaskIds, so neither does the emulator; without MaxResults one page holds all),
``DryRun``.
The answer is ``importImageTaskSet`` of ``item``s (``importTaskId``, ``status``,
``statusMessage``, ``progress``, ``imageId``) and ``nextToken``; errors are EC2's
``<Response><Errors><Error>`` shape with a ``RequestID``, as botocore's ec2 parser reads
them. Naming an ID that does not exist fails the whole call, as EC2's describe calls do.
"""

from __future__ import annotations

from ibimport.emulator.ec2.models import STATE_FILTER, ImportTasks
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

__all__ = ["EC2", "describe_import_image_tasks", "render_error"]

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
VERSION = "2016-11-15"
_AUTH_ERRORS = (
    UnrecognizedClientException,
    InvalidSignatureException,
    IncompleteSignatureException,
    MissingAuthenticationTokenException,
    ExpiredTokenException,
)


def describe_import_image_tasks(tasks: ImportTasks, call: QueryCall) -> bytes:
    """POST / Action=DescribeImportImageTasks."""
    params = call.params
    if params.get("DryRun", "").lower() == "true":
        raise DryRunOperation()
    states: frozenset[str] | None = None
    for name, values in filters(params).items():
        if name != STATE_FILTER:
            raise InvalidParameterValue(f"The filter '{name}' is invalid")
        states = frozenset(values) if states is None else states & frozenset(values)
    views, token = tasks.describe(
        numbered(params, "ImportTaskId"),
        states=states,
        max_results=_max_results(params.get("MaxResults")),
        next_token=params.get("NextToken"),
    )
    items = "".join(
        "<item>"
        + element("importTaskId", view.task_id)
        + element("status", view.status.value)
        + element("statusMessage", view.message)
        + element("progress", view.progress)
        + element("imageId", view.image_id)
        + "</item>"
        for view in views
    )
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
    actions={"DescribeImportImageTasks": describe_import_image_tasks},
    translate=translate,
    render_error=render_error,
    unknown_action=lambda action: InvalidAction(
        f"The action {action} is not valid for this web service."
    ),
)
