"""The one module that knows aioboto3: an Image Builder client for the runner.

Everything botocore or aiohttp can raise is translated at the boundary (``boundary``) into
``ibimport.errors``, so the runner and the retry policy reason about AWS error codes, never
about library exception classes. botocore's own retries are off: it does not recognise
Image Builder's throttling (HTTP 429 CallRateLimitExceededException), and retrying in one
place, with one limiter, is what keeps the pace even. The per-call work botocore would
repeat is taken out once per client (``fastpath``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import aioboto3
import anyio
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from botocore.config import Config

from ibimport.aws.boundary import one_line, printable, translate_error
from ibimport.aws.fastpath import USER_AGENT, NoResendSession, trim_per_call_work
from ibimport.aws.regions import check_endpoint_url, check_region
from ibimport.domain.apimodel import LIST_PAGE_MAX
from ibimport.errors import ConfigError, FatalBatchError

SERVICE = "imagebuilder"
#: EC2, for DescribeImportImageTasks (``ibimport.stages.taskcheck``), on the same endpoint URL.
EC2_SERVICE = "ec2"
#: Import task IDs asked for in one DescribeImportImageTasks call. The EC2 model (1.44.8)
#: states no limit on ``ImportTaskIds`` nor a range for ``MaxResults``; 100 is what EC2's
#: other describe calls accept per page and keeps an answer small.
TASK_IDS_PER_CALL = 100
#: The error codes with which EC2 refuses a call that names an import task it does not
#: know: EC2 (and the emulator) answer an unknown ID with ``InvalidConversionTaskId.Malformed``
#: and a misshapen one with ``InvalidParameterValue``; both fail the whole call, and no
#: message is read for which ID it was (``importtasks`` splits the batch instead).
UNKNOWN_TASK_CODES = frozenset(
    {
        "InvalidConversionTaskId.Malformed",
        "InvalidConversionTaskId.NotFound",
        "InvalidConversionTaskId",
        "InvalidParameterValue",
    }
)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ImportVmImage answers."""

    request_id: str
    image_arn: str
    client_token: str


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """One existing build, as ListImageBuildVersions lists it."""

    arn: str
    name: str
    semantic_version: str  # without the build node
    status: str
    #: ``state.reason`` (why a build FAILED, say); empty when the service gave none.
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BuildPage:
    """One page of builds, and the token for the next one (None on the last page)."""

    builds: list[BuildSummary]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class ImportTaskInfo:
    """One EC2 import image task as DescribeImportImageTasks (or ImportImage) shows it."""

    task_id: str
    status: str  # active | completed | deleting | deleted
    progress: str
    message: str
    #: The AMI a completed task made ("" before).
    image_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoleInfo:
    """An IAM role as GetRole answers it: whether VM Import may assume it."""

    name: str
    #: Its trust policy lets ``vmie.amazonaws.com`` assume it (VM Import's service principal).
    trusts_vmie: bool


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    """One Service Quotas quota: its code, name and value."""

    code: str
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class ImportTaskPage:
    """One page of import tasks, and the token for the next one (None on the last page)."""

    tasks: list[ImportTaskInfo]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class ImageState:
    """One image build's status and its reason, as GetImage answers."""

    arn: str
    status: str
    reason: str


class PartitionClient(Protocol):
    """Every call the stages make of one partition (account and Region): Image Builder's
    and EC2's. ``open_client`` makes the real one; tests substitute fakes."""

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult: ...

    async def list_builds(self, *, next_token: str | None) -> BuildPage: ...

    async def get_image(self, arn: str) -> ImageState: ...

    async def describe_import_tasks(
        self,
        task_ids: Sequence[str],
        *,
        next_token: str | None,
        filters: Mapping[str, Sequence[str]] | None = None,
    ) -> ImportTaskPage: ...

    async def import_image(
        self, params: Mapping[str, Any], *, client_token: str, tags: Mapping[str, str]
    ) -> ImportTaskInfo: ...

    async def cancel_import_task(self, task_id: str) -> str: ...

    async def head_object(self, bucket: str, key: str) -> int: ...

    async def bucket_region(self, bucket: str) -> str: ...

    async def get_role(self, name: str) -> RoleInfo: ...

    async def get_service_quota(self, service_code: str, quota_code: str) -> float: ...

    async def list_service_quotas(self, service_code: str) -> list[QuotaInfo]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientSettings:
    """How to reach Image Builder: the AWS conventions (region, profile, endpoint, chain)."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    max_pool_connections: int = 16
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    #: Explicit credentials (``--local`` uses throwaway ones); None means the standard chain.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


class AioImageBuilderClient:
    """A PartitionClient over one long-lived aioboto3 client, and the other services'
    (EC2, S3, IAM, Service Quotas), each made on its first use.

    They share the session (credentials loaded once), region, endpoint URL and botocore
    config; each is opened only when a call first needs it, because loading a service
    model costs a run that never asks (most of them) a few hundred ms.
    """

    def __init__(
        self,
        client: Any,
        *,
        open_service: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self._client = client
        self._open_service = open_service
        self._services: dict[str, Any] = {}
        self._services_lock = anyio.Lock()

    async def _service(self, name: str) -> Any:
        async with self._services_lock:
            client = self._services.get(name)
            if client is None:
                if self._open_service is None:
                    raise FatalBatchError(f"this client was opened without {name}")
                client = self._services[name] = await self._open_service(name)
            return client

    async def _ec2_client(self) -> Any:
        return await self._service(EC2_SERVICE)

    async def describe_import_tasks(
        self,
        task_ids: Sequence[str],
        *,
        next_token: str | None,
        filters: Mapping[str, Sequence[str]] | None = None,
    ) -> ImportTaskPage:
        """One page of DescribeImportImageTasks for these IDs (at most ``TASK_IDS_PER_CALL``),
        or, without IDs, of every task ``filters`` match (``task-state``, ``tag:KEY``).

        A call naming an ID EC2 does not know fails as a whole (``ApiError`` with a code in
        ``UNKNOWN_TASK_CODES``), without saying which.
        """
        ec2 = await self._ec2_client()
        kwargs: dict[str, Any] = {"MaxResults": TASK_IDS_PER_CALL}
        if task_ids:
            kwargs["ImportTaskIds"] = list(task_ids)
        if filters:
            kwargs["Filters"] = [{"Name": k, "Values": list(v)} for k, v in filters.items()]
        if next_token:
            kwargs["NextToken"] = next_token
        try:
            answer = await ec2.describe_import_image_tasks(**kwargs)
        except Exception as error:
            raise translate_error(error) from None
        tasks = [_task_info(task) for task in answer.get("ImportImageTasks", [])]
        return ImportTaskPage(tasks=tasks, next_token=answer.get("NextToken") or None)

    async def import_image(
        self, params: Mapping[str, Any], *, client_token: str, tags: Mapping[str, str]
    ) -> ImportTaskInfo:
        """Start one EC2 import task (ImportImage) with its ClientToken, the task tagged."""
        ec2 = await self._ec2_client()
        spec = {
            "ResourceType": "import-image-task",
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        try:
            answer = await ec2.import_image(
                **params, ClientToken=client_token, TagSpecifications=[spec]
            )
        except Exception as error:
            raise translate_error(error) from None
        return _task_info(answer)

    async def cancel_import_task(self, task_id: str) -> str:
        """CancelImportTask; the task's state before (``active``)."""
        ec2 = await self._ec2_client()
        try:
            answer = await ec2.cancel_import_task(ImportTaskId=task_id)
        except Exception as error:
            raise translate_error(error) from None
        return printable(str(answer.get("PreviousState") or ""))

    async def head_object(self, bucket: str, key: str) -> int:
        """S3 HeadObject: the object's size in bytes."""
        s3 = await self._service("s3")
        try:
            answer = await s3.head_object(Bucket=bucket, Key=key)
        except Exception as error:
            raise translate_error(error) from None
        return int(answer.get("ContentLength") or 0)

    async def bucket_region(self, bucket: str) -> str:
        """S3 GetBucketLocation, as a Region name (us-east-1's is answered empty)."""
        s3 = await self._service("s3")
        try:
            answer = await s3.get_bucket_location(Bucket=bucket)
        except Exception as error:
            raise translate_error(error) from None
        return printable(str(answer.get("LocationConstraint") or "us-east-1"))

    async def get_role(self, name: str) -> RoleInfo:
        """IAM GetRole: whether the role's trust policy names ``vmie.amazonaws.com``."""
        iam = await self._service("iam")
        try:
            answer = await iam.get_role(RoleName=name)
        except Exception as error:
            raise translate_error(error) from None
        policy = (answer.get("Role") or {}).get("AssumeRolePolicyDocument") or {}
        if isinstance(policy, str):  # URL-encoded JSON when botocore left it as text
            try:
                policy = json.loads(unquote(policy))
            except ValueError:
                policy = {}
        return RoleInfo(name=name, trusts_vmie=VMIE_PRINCIPAL in json.dumps(policy))

    async def get_service_quota(self, service_code: str, quota_code: str) -> float:
        """Service Quotas GetServiceQuota: the quota's applied value."""
        quotas = await self._service("service-quotas")
        try:
            answer = await quotas.get_service_quota(ServiceCode=service_code, QuotaCode=quota_code)
        except Exception as error:
            raise translate_error(error) from None
        return float((answer.get("Quota") or {}).get("Value") or 0.0)

    async def list_service_quotas(self, service_code: str) -> list[QuotaInfo]:
        """Service Quotas ListServiceQuotas: every quota of a service (all pages)."""
        quotas = await self._service("service-quotas")
        found: list[QuotaInfo] = []
        kwargs: dict[str, Any] = {"ServiceCode": service_code}
        while True:
            try:
                answer = await quotas.list_service_quotas(**kwargs)
            except Exception as error:
                raise translate_error(error) from None
            found.extend(
                QuotaInfo(
                    code=str(q.get("QuotaCode", "")),
                    name=str(q.get("QuotaName", "")),
                    value=float(q.get("Value") or 0.0),
                )
                for q in answer.get("Quotas", [])
            )
            token = answer.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token

    async def get_image(self, arn: str) -> ImageState:
        """GetImage for one build ARN: its ``state.status`` and ``state.reason``."""
        try:
            answer = await self._client.get_image(imageBuildVersionArn=arn)
        except Exception as error:
            raise translate_error(error) from None
        state = (answer.get("image") or {}).get("state") or {}
        contexts = answer.get(_FAILURE_CONTEXTS) or {}
        return ImageState(
            arn=arn,
            status=printable(str(state.get("status", ""))),
            reason=_reason(state, contexts.get(arn)),
        )

    async def import_vm_image(
        self, params: Mapping[str, Any], *, client_token: str
    ) -> ImportResult:
        """Send one ImportVmImage; any failure arrives as ApiError or TransportError."""
        try:
            answer = await self._client.import_vm_image(**params, clientToken=client_token)
        except Exception as error:
            raise translate_error(error) from None
        return ImportResult(
            request_id=answer.get("requestId", ""),
            image_arn=answer.get("imageArn", ""),
            client_token=answer.get("clientToken", client_token),
        )

    async def list_builds(self, *, next_token: str | None) -> BuildPage:
        """One page of every build in the account and Region, with its state.

        ListImageBuildVersions without ``imageVersionArn``, 100 a page: both from the
        current service model (botocore 1.44.8); the pinned model caps pages at 25. Our
        client sends it as is because parameter validation is off (``botocore_config``).
        """
        kwargs: dict[str, Any] = {"maxResults": LIST_PAGE_MAX}
        if next_token:
            kwargs["nextToken"] = next_token
        try:
            page = await self._client.list_image_build_versions(**kwargs)
        except Exception as error:
            raise translate_error(error) from None
        contexts = page.get(_FAILURE_CONTEXTS) or {}
        builds = [
            BuildSummary(
                arn=str(summary.get("arn", "")),
                name=str(summary.get("name", "")),
                # The current model's ImageSummary.version may carry the build ("1.0.0/2").
                semantic_version=str(summary.get("version", "")).split("/", 1)[0],
                status=str((summary.get("state") or {}).get("status", "")),
                reason=_reason(summary.get("state") or {}, contexts.get(summary.get("arn"))),
            )
            for summary in page.get("imageSummaryList", [])
        ]
        return BuildPage(builds=builds, next_token=page.get("nextToken") or None)


#: VM Import/Export's service principal: the import role must trust it (VM Import guide).
VMIE_PRINCIPAL = "vmie.amazonaws.com"


def _task_info(task: Mapping[str, Any]) -> ImportTaskInfo:
    """An ImportImageTask (or ImportImage's answer) as the stages read it."""
    tags = {
        printable(str(t.get("Key", ""))): printable(str(t.get("Value", "")))
        for t in task.get("Tags") or ()
    }
    return ImportTaskInfo(
        task_id=printable(str(task.get("ImportTaskId", ""))),
        status=printable(str(task.get("Status", ""))),
        progress=printable(str(task.get("Progress") or "")),
        message=printable(str(task.get("StatusMessage") or "")),
        image_id=printable(str(task.get("ImageId") or "")),
        tags=tags,
    )


#: Where ``_keep_failure_contexts`` leaves what the pinned model's parser drops.
_FAILURE_CONTEXTS = "ibimportFailureContexts"


def _keep_failure_contexts(
    response_dict: Mapping[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """Keep ``state.failureContext`` (current model, botocore 1.44.x; the pinned model
    lacks it, so its parser drops it) by image ARN, read from the raw JSON answer."""
    body = response_dict.get("body")
    if not isinstance(body, bytes) or b'"failureContext"' not in body:
        return
    try:
        answer = json.loads(body)
    except ValueError:
        return
    images = [answer.get("image"), *(answer.get("imageSummaryList") or [])]
    customized_response_dict[_FAILURE_CONTEXTS] = {
        image.get("arn"): context
        for image in images
        if isinstance(image, dict)
        and isinstance(context := (image.get("state") or {}).get("failureContext"), dict)
    }


def _reason(state: Mapping[str, Any], context: Mapping[str, Any] | None) -> str:
    """``state.reason``, and the ``failureContext`` of a FAILED image after it."""
    reason = str(state.get("reason") or "")
    if context:
        detail = "; ".join(f"{key}={_flat(value)}" for key, value in context.items())
        reason = f"{reason} (failureContext: {detail})" if reason else f"failureContext: {detail}"
    return printable(reason)


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    return str(value)


def botocore_config(settings: ClientSettings) -> Config:
    """botocore retries off (ours are the only ones), a pool as large as the concurrency.

    The rest takes per-call work that never changes out of the hot path, through
    botocore's own settings: a fixed User-Agent, no parameter validation (the manifest
    already enforces the model's rules), checksums only where an operation requires one
    (Image Builder's operations declare none).
    """
    return AioConfig(
        http_session_cls=NoResendSession,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(settings.max_pool_connections, 10),
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        tcp_keepalive=True,
        parameter_validation=False,
        user_agent=USER_AGENT,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


async def open_session(settings: ClientSettings) -> Any:
    """An aioboto3 session with its credentials loaded and checked, once.

    Missing credentials are a FatalBatchError here rather than thousands of per-row
    failures later. Sessions are opened one after another: resolving credentials
    concurrently is a known aiobotocore race (aio-libs/aiobotocore#1455).
    """
    if settings.region is not None:
        check_region(settings.region)
    if settings.endpoint_url is not None:
        check_endpoint_url(settings.endpoint_url)
    try:
        session = aioboto3.Session(
            profile_name=settings.profile,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
        )
        credentials = await session.get_credentials()
        if credentials is None:
            raise FatalBatchError(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, run `aws configure`, or use --local for the emulator"
            )
        await credentials.get_frozen_credentials()
    except bce.ProfileNotFound as error:
        raise FatalBatchError(f"AWS profile not found: {error.kwargs.get('profile')}") from None
    except bce.BotoCoreError as error:
        raise FatalBatchError(f"could not load AWS credentials: {one_line(error)}") from None
    if session.region_name is None:
        raise ConfigError("no AWS Region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
    if settings.region is None:
        check_region(session.region_name, given_as="the Region of the environment or profile")
    return session


async def account_of(session: Any, settings: ClientSettings) -> str:
    """The account a session's calls land in (STS GetCallerIdentity; needs no permission)."""
    try:
        async with session.client(
            "sts", endpoint_url=settings.endpoint_url, config=botocore_config(settings)
        ) as sts:
            answer = await sts.get_caller_identity()
    except Exception as error:
        raise translate_error(error) from None
    return str(answer.get("Account", ""))


@asynccontextmanager
async def open_client(
    settings: ClientSettings, *, session: Any = None
) -> AsyncIterator[AioImageBuilderClient]:
    """Open one long-lived client (on ``session``, else a new one from ``settings``)."""
    if session is None:
        session = await open_session(settings)
    async with AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(
                session.client(
                    SERVICE,
                    region_name=settings.region or session.region_name,
                    endpoint_url=settings.endpoint_url,
                    config=botocore_config(settings),
                )
            )
        except bce.InvalidRegionError:
            raise ConfigError(
                f"invalid AWS region {settings.region or session.region_name!r}:"
                " expected a name such as eu-west-1"
            ) from None
        except ValueError:  # botocore's "Invalid endpoint" (no scheme, no host)
            raise ConfigError(
                f"invalid --endpoint-url {settings.endpoint_url!r}:"
                " expected a URL such as https://imagebuilder.eu-west-1.amazonaws.com"
            ) from None
        trim_per_call_work(client)
        for operation in ("GetImage", "ListImageBuildVersions"):
            client.meta.events.register(
                f"before-parse.{SERVICE}.{operation}", _keep_failure_contexts
            )

        async def open_service(name: str) -> Any:
            # Our signer fast path and endpoint trimming are Image Builder's only: the
            # other services are called once per task or per hundred rows, so botocore's
            # own per-call work is no cost.
            other = await stack.enter_async_context(
                session.client(
                    name,
                    region_name=settings.region or session.region_name,
                    endpoint_url=settings.endpoint_url,
                    config=botocore_config(settings),
                )
            )
            service = other.meta.service_model.service_id.hyphenize()
            other.meta.events.unregister(
                f"needs-retry.{service}", unique_id=f"retry-config-{service}"
            )
            return other

        yield AioImageBuilderClient(client, open_service=open_service)
