// The emulator as the AWS SDK for JavaScript v3 sees it: a client nobody here wrote, on the
// current service model. Run by tests/emulator/test_emulator_js.py against an emulator
// started with the knobs below; prints one JSON line of failures and exits 1 if any.
//
//   IBIMPORT_EMULATOR_URL   the endpoint
//   DENIED_KEY              an access key --deny refuses ImportVmImage,
//                           ec2:DescribeImportImageTasks and AssumeRole
//   (the emulator runs with --short-pages, image 1's task active for ever, some tasks
//    completed, the others undeclared, and a small --available-after-s, so images reach
//    AVAILABLE or FAILED soon and image 1 can be cancelled)
import {
  AccessDeniedException,
  CancelImageCreationCommand,
  GetImageCommand,
  ImagebuilderClient,
  ImportVmImageCommand,
  InvalidRequestException,
  ListImagesCommand,
  paginateListImageBuildVersions,
} from "@aws-sdk/client-imagebuilder";
import { DescribeImportImageTasksCommand, EC2Client } from "@aws-sdk/client-ec2";
import { AssumeRoleCommand, STSClient } from "@aws-sdk/client-sts";

const endpoint = process.env.IBIMPORT_EMULATOR_URL;
const region = "us-east-1";
const own = { accessKeyId: "AKIDJSCONTRACT", secretAccessKey: "secret" };
const denied = { accessKeyId: process.env.DENIED_KEY, secretAccessKey: "secret" };
const client = (Kind, credentials) => new Kind({ endpoint, region, credentials, maxAttempts: 1 });
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

async function refusedWith(promise) {
  try { await promise; return null; } catch (error) { return error; }
}

const FINAL = new Set(["AVAILABLE", "FAILED", "CANCELLED"]);

async function untilFinal(ib, arn) {
  // The SDK has no waiter for an imported image: poll GetImage as its waiters do.
  for (let i = 0; i < 600; i++) {
    const answer = await ib.send(new GetImageCommand({ imageBuildVersionArn: arn }));
    if (FINAL.has(answer.image.state.status)) return answer;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${arn} never reached a final state`);
}

const ib = client(ImagebuilderClient, own);
const request = (n, taskId) => ({
  name: `js-vm-${n}`,
  semanticVersion: "1.0.0",
  platform: "Linux",
  vmImportTaskId: taskId,
  clientToken: `js-token-${n}`,
});

// Typed access-denied errors, one per service.
const deniedImport = await refusedWith(
  client(ImagebuilderClient, denied).send(new ImportVmImageCommand(request(0, "import-ami-0000000000")))
);
check(deniedImport instanceof AccessDeniedException, `ImportVmImage: ${deniedImport?.name}`);
check(deniedImport?.$metadata?.httpStatusCode === 403, "ImportVmImage: 403");
const deniedEc2 = await refusedWith(
  client(EC2Client, denied).send(new DescribeImportImageTasksCommand({}))
);
check(deniedEc2?.name === "UnauthorizedOperation", `DescribeImportImageTasks: ${deniedEc2?.name}`);
const deniedSts = await refusedWith(
  client(STSClient, denied).send(
    new AssumeRoleCommand({ RoleArn: "arn:aws:iam::222222222222:role/x", RoleSessionName: "js" })
  )
);
check(deniedSts?.name === "AccessDenied", `AssumeRole: ${deniedSts?.name}`);

// Images: enough to page, some FAILED (their task is missing), one cancelled.
const arns = [];
for (let n = 1; n <= 40; n++) {
  const taskId = `import-ami-${String(n).padStart(17, "0")}`;
  arns.push((await ib.send(new ImportVmImageCommand(request(n, taskId)))).imageArn);
}
const cancelled = arns[0];
const answer = await ib.send(
  new CancelImageCreationCommand({ imageBuildVersionArn: cancelled, clientToken: "js-cancel" })
);
check(answer.imageBuildVersionArn === cancelled, "CancelImageCreation answers the ARN");

// Short pages through the SDK's paginator: every build once.
const listed = [];
let pages = 0;
for await (const page of paginateListImageBuildVersions({ client: ib, pageSize: 10 }, {})) {
  pages += 1;
  for (const build of page.imageSummaryList ?? []) listed.push(build.arn);
}
check(listed.length === arns.length && new Set(listed).size === arns.length, `listed ${listed.length}`);
check(pages > 4, `short pages: ${pages} pages of 10 for 40 builds`);

// Every image polled to a final state; FAILED ones say why (and carry failureContext
// where the SDK's model is new enough to know it: 3.1046 is not).
const statuses = {};
for (const arn of arns) {
  const got = await untilFinal(ib, arn);
  const state = got.image.state;
  statuses[state.status] = (statuses[state.status] ?? 0) + 1;
  if (state.status === "FAILED") {
    check(state.reason, `${arn}: FAILED without a reason`);
    if ("failureContext" in state) check(state.failureContext?.imageStatus, `${arn}: failureContext`);
  }
  check(got.latestVersionReferences?.latestVersionArn?.endsWith("/x.x.x"), "latestVersionReferences");
}
check((await ib.send(new GetImageCommand({ imageBuildVersionArn: cancelled }))).image.state.status === "CANCELLED", "CANCELLED");
check(statuses.AVAILABLE > 0 && statuses.FAILED > 0, `statuses ${JSON.stringify(statuses)}`);

// ListImages byName, and refused beside a version filter.
const byName = await ib.send(new ListImagesCommand({ byName: true, maxResults: 100 }));
check(byName.imageVersionList.every((v) => v.arn.endsWith("/x.x.x")), "byName ARNs");
const refused = await refusedWith(
  ib.send(new ListImagesCommand({ byName: true, filters: [{ name: "version", values: ["1.0.0"] }] }))
);
check(refused instanceof InvalidRequestException, `byName + version: ${refused?.name}`);

console.log(JSON.stringify({ failures, pages, statuses }));
process.exit(failures.length ? 1 : 0);
