// Compiled, not run (`tsc -p test/tsconfig.json` in `npm test`): the published declarations type a
// producer's code as the package's README shows it, and refuse what the contract refuses.
import { Client, InvalidJobError, VideoTimeoutError, shardOf } from '@hmr2/client';
import type { JobResult, ResultEntry, TrackInfo, VideoOutput, VideoProgress } from '@hmr2/client';

export async function producer(frames: Buffer[]): Promise<number> {
  const client = await Client.connect({ url: ['redis://a:6379', 'redis://b:6379'], shards: 3 });
  const id: string = await client.addFrame(frames[0]!, { jobId: 'j', boxes: [[0, 0, 10, 10]], vertices: true });
  const ids: string[] = await client.addFrames(frames.map((image, n) => ({ image, jobId: `v:${n}`, videoId: 'v', frameNumber: n })));
  const sent = await client.submitVideo('v', frames, 30, { frameReplyTo: undefined, onProgress: (n: number, total: number) => n / total });
  const progress: VideoProgress[] = [];
  const out: VideoOutput = await client.waitVideo(sent, { timeoutMs: 1000, onProgress: (p) => progress.push(p) });
  const tracks: TrackInfo[] = out.done.tracks ?? [];
  const ids2: number[] = out.frames.flatMap((f) => (f.people ?? []).map((p) => p.track_id));
  for await (const p of client.videoProgress('v')) if (p.phase === 'done') break;
  for await (const e of client.results(undefined, { videoId: 'v' })) {
    const entry: ResultEntry = e;
    if (entry.result) {
      const r: JobResult = entry.result;
      const people = r.people ?? [];
      const x: number = people[0]?.keypoints_2d[0]?.[0] ?? 0;
      void x;
    } else {
      const why: string = entry.unreadable.reason;
      void why;
    }
  }
  const info = await client.modelInfo();
  const names: string[] = info?.keypoint_names ?? [];
  try {
    await client.waitVideo('w');
  } catch (e) {
    if (e instanceof VideoTimeoutError || e instanceof InvalidJobError) return 0;
  }
  // @ts-expect-error: a frame needs its job id
  await client.addFrame(frames[0]!, { videoId: 'v' });
  // @ts-expect-error: a box has four coordinates
  await client.addFrame(frames[0]!, { jobId: 'j', boxes: [[0, 0, 10]] });
  await client.close();
  return id.length + ids.length + tracks.length + ids2.length + names.length + shardOf('v', 3);
}
