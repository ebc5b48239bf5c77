// A script as a user would write it with the generated client: save a workflow with an
// approval step, run it with run-and-wait, poll it, answer the approval, read the output;
// then a workflow that ends in one round trip, and typed errors.
// Usage: node dist/scenario.js <base URL> <tenant id> <api key>; prints one JSON line of what
// it saw, which tests/tests/ts_client.rs checks.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api.js";

// Node's globals without a dependency on @types/node.
declare const process: { argv: string[]; exitCode?: number };

type Instance = components["schemas"]["InstanceDetail"];
type ErrorBody = components["schemas"]["ErrorBody"];
type NodeType = components["schemas"]["NodeType"];
type InstanceStatus = components["schemas"]["InstanceStatus"];

const [, , baseUrl, tenantID, apiKey] = process.argv;
if (!baseUrl || !tenantID || !apiKey) {
  throw new Error("usage: scenario <base URL> <tenant id> <api key>");
}

const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `api_key ${apiKey}` },
});
const tenant = { tenantID };

function check<T>(what: string, data: T | undefined, error: unknown, response: Response): T {
  if (data === undefined) {
    throw new Error(`${what}: ${response.status} ${JSON.stringify(error)}`);
  }
  return data;
}

async function getInstance(instanceID: string): Promise<Instance> {
  const { data, error, response } = await client.GET(
    "/api/v1/tenants/{tenantID}/workflows/instances/{instanceID}",
    { params: { path: { ...tenant, instanceID } } },
  );
  return check("getInstance", data, error, response);
}

/** Polls until `done` holds, every 100 ms, for at most 20 s. */
async function poll(instanceID: string, done: (i: Instance) => boolean): Promise<Instance> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const instance = await getInstance(instanceID);
    if (done(instance)) return instance;
    if (Date.now() > deadline) throw new Error(`gave up polling ${JSON.stringify(instance)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Runs a workflow, waiting up to `waitSeconds` for its end. */
async function runAndWait(
  workflowID: string,
  inputValues: Record<string, unknown>,
  waitSeconds: number,
): Promise<{ httpStatus: number; instance: Instance }> {
  const { data, error, response } = await client.POST(
    "/api/v1/tenants/{tenantID}/workflows/{workflowID}/execute",
    {
      params: { path: { ...tenant, workflowID }, query: { waitSeconds } },
      body: { inputValues },
    },
  );
  const body = check("executeWorkflow", data, error, response);
  // With waitSeconds the answer is the instance (200); 202 carries only the id.
  if (!("status" in body)) throw new Error(`expected the instance, got ${JSON.stringify(body)}`);
  return { httpStatus: response.status, instance: body };
}

const node = (id: string, type: NodeType, data: Record<string, unknown>) => ({ id, type, data });
const end = (id: string, verdict: string) =>
  node(id, "end", { outputParameters: [{ name: "verdict", sourceVariable: verdict }] });

// 1. A workflow with an approval step. Node ids are fresh: they are unique across workflows.
const ids = {
  start: crypto.randomUUID(),
  ask: crypto.randomUUID(),
  yes: crypto.randomUUID(),
  no: crypto.randomUUID(),
};
const created = await client.POST("/api/v1/tenants/{tenantID}/workflows", {
  params: { path: tenant },
  body: {
    title: "ship it?",
    nodes: [
      node(ids.start, "start", {}),
      node(ids.ask, "approval", { title: "Ship it?" }),
      end(ids.yes, "shipped"),
      end(ids.no, "held"),
    ],
    edges: [
      { source: ids.start, target: ids.ask },
      { source: ids.ask, target: ids.yes, sourceHandle: "approved" },
      { source: ids.ask, target: ids.no, sourceHandle: "rejected" },
    ],
  },
});
const approvalFlow = check("createWorkflow", created.data, created.error, created.response);

// 2. Run-and-wait: an approval never ends in time, so the answer is the running instance.
const waited = await runAndWait(approvalFlow.workflowID, {}, 1);

// 3. Poll until the approval is asked for.
const asking = await poll(waited.instance.instanceID, (i) => i.pendingRequests.length > 0);
const request = asking.pendingRequests[0];
if (!request) throw new Error("no pending request");
const submitPath = "/api/v1/tenants/{tenantID}/workflows/data-collection/{collectionRequestID}/submit";
const submitParams = { path: { ...tenant, collectionRequestID: request.collectionRequestID } };

// 4. A typed error: an approval needs `approved`.
const invalid = await client.POST(submitPath, {
  params: submitParams,
  body: { data: { comment: "no verdict" } },
});
const invalidError: ErrorBody | undefined = invalid.error;

// 5. Answer it, and read the run's output.
const answered = await client.POST(submitPath, {
  params: submitParams,
  body: { data: { approved: true, comment: "ship it" } },
});
check("submitDataCollection", answered.data, answered.error, answered.response);
const approved = await poll(waited.instance.instanceID, (i) => i.status !== "RUNNING");

// 6. A second answer is refused with its own code.
const again = await client.POST(submitPath, {
  params: submitParams,
  body: { data: { approved: false } },
});

// 7. A workflow that ends within the wait: status and output in one round trip.
const s = crypto.randomUUID();
const e = crypto.randomUUID();
const echo = await client.POST("/api/v1/tenants/{tenantID}/workflows", {
  params: { path: tenant },
  body: {
    title: "echo",
    workflowOptions: { inputs: [{ name: "who", type: "string", required: true }] },
    nodes: [
      node(s, "start", {}),
      node(e, "end", { outputParameters: [{ name: "hello", sourceVariable: "{{ctx.input.who}}" }] }),
    ],
    edges: [{ source: s, target: e }],
  },
});
const echoFlow = check("createWorkflow", echo.data, echo.error, echo.response);
const oneTrip = await runAndWait(echoFlow.workflowID, { who: "typescript" }, 30);

// Statuses are enums: a typo in a comparison would not compile.
const ended: InstanceStatus = oneTrip.instance.status;

// 8. More typed errors: an unknown instance, and a wait beyond the bound.
const missing = await client.GET("/api/v1/tenants/{tenantID}/workflows/instances/{instanceID}", {
  params: { path: { ...tenant, instanceID: crypto.randomUUID() } },
});
const tooLong = await client.POST("/api/v1/tenants/{tenantID}/workflows/{workflowID}/execute", {
  params: { path: { ...tenant, workflowID: echoFlow.workflowID }, query: { waitSeconds: 61 } },
  body: { inputValues: { who: "nobody" } },
});

// 9. Enums and title bounds hold on both sides: an unknown node type does not compile (and
// the server refuses it when sent anyway), nor an unknown cron policy; an empty title is
// refused by the schema.
const badNode = { id: crypto.randomUUID(), type: "email", data: {} };
const badType = await client.POST("/api/v1/tenants/{tenantID}/workflows", {
  params: { path: tenant },
  body: {
    title: "bad",
    // @ts-expect-error `email` is not a NodeType
    nodes: [badNode],
    edges: [],
  },
});
const badPolicy = await client.POST("/api/v1/tenants/{tenantID}/cronjobs", {
  params: { path: tenant },
  body: {
    cronJobTitle: "nightly",
    cronJobSchedule: "0 3 * * *",
    workflowID: echoFlow.workflowID,
    // @ts-expect-error `sometimes` is not an OverlapPolicy
    overlapPolicy: "sometimes",
  },
});
const emptyTitle = await client.PATCH("/api/v1/tenants/{tenantID}", {
  params: { path: tenant },
  body: { tenantTitle: "" },
});

console.log(
  JSON.stringify({
    waitedHttpStatus: waited.httpStatus,
    waitedStatus: waited.instance.status,
    requestType: request.collectionType,
    invalidStatus: invalid.response.status,
    invalidCode: invalidError?.code,
    approvedStatus: approved.status,
    approvedOutput: approved.context,
    againStatus: again.response.status,
    againCode: again.error?.code,
    oneTripHttpStatus: oneTrip.httpStatus,
    oneTripStatus: oneTrip.instance.status,
    oneTripOutput: oneTrip.instance.context,
    missingStatus: missing.response.status,
    missingCode: missing.error?.code,
    tooLongStatus: tooLong.response.status,
    tooLongCode: tooLong.error?.code,
    ended,
    badTypeStatus: badType.response.status,
    badTypeCode: badType.error?.code,
    badPolicyStatus: badPolicy.response.status,
    badPolicyCode: badPolicy.error?.code,
    emptyTitleStatus: emptyTitle.response.status,
    emptyTitleCode: emptyTitle.error?.code,
  }),
);
