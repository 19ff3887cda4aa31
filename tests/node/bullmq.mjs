// BullMQ (a real job-queue library from npm: every operation is a Lua script; workers wait with
// blocking commands and the queue's events are a stream) against a real Ferrite tenant.
// Usage: node tests/node/bullmq.mjs <port> <tenant> <password>
// Adds jobs (plain, delayed, with priorities, one that fails and is retried), processes them
// with a Worker, listens to QueueEvents, and checks every result. Exits 0 when all is right.
import { Queue, Worker, QueueEvents } from 'bullmq';

const [port, username, password] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port), username, password, maxRetriesPerRequest: null };
const deadline = setTimeout(() => { console.error('FAIL: timed out'); process.exit(1); }, 60000);

function check(cond, what) {
  if (!cond) { console.error(`FAIL: ${what}`); process.exit(1); }
  console.log(`ok: ${what}`);
}

const name = `jobs-${process.pid}`;
const queue = new Queue(name, { connection });
const events = new QueueEvents(name, { connection });
await events.waitUntilReady();

const N = 50;
const completed = new Map();
const attempts = new Map();
let completedEvents = 0;
events.on('completed', () => { completedEvents += 1; });

const worker = new Worker(name, async (job) => {
  attempts.set(job.name, (attempts.get(job.name) ?? 0) + 1);
  if (job.name === 'flaky' && job.attemptsMade === 0) throw new Error('first try fails');
  return { doubled: job.data.n * 2 };
}, { connection, concurrency: 4 });
worker.on('completed', (job, result) => completed.set(job.id, result));
await worker.waitUntilReady();

const jobs = await queue.addBulk(
  Array.from({ length: N }, (_, i) => ({ name: `job-${i}`, data: { n: i }, opts: { priority: (i % 3) + 1 } })),
);
await queue.add('delayed', { n: 1000 }, { delay: 300 });
await queue.add('flaky', { n: 7 }, { attempts: 3, backoff: { type: 'fixed', delay: 50 } });
const total = N + 2;

while (completed.size < total) await new Promise((r) => setTimeout(r, 50));
check(jobs.every((j) => completed.get(j.id)?.doubled === j.data.n * 2), `${N} jobs processed with their results`);
check([...completed.values()].some((r) => r.doubled === 2000), 'the delayed job ran');
check(attempts.get('flaky') === 2, 'the failing job was retried once and completed');
const counts = await queue.getJobCounts('completed', 'failed', 'waiting', 'delayed', 'active');
check(counts.completed === total && counts.failed === 0 && counts.waiting === 0 && counts.delayed === 0,
  `job counts ${JSON.stringify(counts)}`);
const done = await queue.getJob(jobs[0].id);
check(done && (await done.isCompleted()) && done.returnvalue.doubled === 0, 'a completed job reads back');
for (let i = 0; i < 100 && completedEvents < total; i++) await new Promise((r) => setTimeout(r, 50));
check(completedEvents === total, `QueueEvents saw ${completedEvents} completions (stream events)`);

await worker.close();
await events.close();
await queue.obliterate({ force: true });
await queue.close();
clearTimeout(deadline);
console.log('bullmq: all checks passed');
