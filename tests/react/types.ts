// errands.d.ts and errands-react.d.ts as an app's TypeScript sees them (tsc --noEmit):
// what the hooks give has the documented types, and misuse does not compile.
import type { Client, Job, Status } from "../../src/errands/web/errands.js";
import { createHooks, type ReactLike } from "../../src/errands/web/errands-react.js";

declare const React: ReactLike;
declare const client: Client;

const { useJobs, useJob, useClientStatus } = createHooks(React);
const jobs: readonly Job[] = useJobs(client, { limit: 5 });
const first: Job | null = useJob(client, jobs[0]?.id);
const status: Status = useClientStatus(client);
const unsubscribe: () => void = client.subscribeJob("id", (job: Job | null) => job?.progress);
export const used = [first?.state, status.connected, unsubscribe];

// @ts-expect-error the limit is a number
useJobs(client, { limit: "5" });
// @ts-expect-error a job is not a Status
export const wrong: Status = useJob(client, "id");
// @ts-expect-error the jobs are read-only
jobs.push(jobs[0]);
