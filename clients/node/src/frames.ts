/**
 * Where {@link Client.submitVideo} takes a video's frames from: Buffers, image file paths, a
 * directory of images, or an (async) iterable of either.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { InvalidJobError } from './errors.js';

/** One frame: JPEG or PNG bytes, or the path of such a file. */
export type FrameItem = Uint8Array | string;

/**
 * A video's frames, in frame order:
 * - a directory path: its `.jpg`, `.jpeg` and `.png` files (any case), sorted by name (byte order,
 *   as `hmr2 enqueue` sorts: name them `000001.jpg`, `000002.jpg`, ...);
 * - an array of Buffers and/or file paths;
 * - any iterable or async iterable of Buffers and/or file paths (a generator, a stream of
 *   decoded frames). Every frame carries the video's length, so an iterable that is not an array
 *   is read whole into memory first unless the length is given (`frames` option).
 */
export type FrameSource = string | readonly FrameItem[] | Iterable<FrameItem> | AsyncIterable<FrameItem>;

const IMAGE = /\.(jpe?g|png)$/i;

/** The image files of `dir`, in byte order of their names. */
export async function imagesIn(dir: string): Promise<string[]> {
  let info;
  try {
    info = await stat(dir);
  } catch (e) {
    throw new InvalidJobError(`cannot read the frames directory ${dir}: ${(e as Error).message}`, 'missing_image');
  }
  if (!info.isDirectory()) {
    throw new InvalidJobError(
      `${dir} is not a directory: pass a directory of frames, or an array of paths or Buffers`,
      'missing_image',
    );
  }
  const names = (await readdir(dir, { withFileTypes: true }))
    .filter((d) => (d.isFile() || d.isSymbolicLink()) && IMAGE.test(d.name))
    .map((d) => d.name)
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return names.map((n) => join(dir, n));
}

/** The bytes of one frame item. */
export async function frameBytes(item: FrameItem): Promise<Buffer> {
  if (typeof item === 'string') {
    try {
      return await readFile(item);
    } catch (e) {
      throw new InvalidJobError(`cannot read frame ${item}: ${(e as Error).message}`, 'missing_image');
    }
  }
  if (item instanceof Uint8Array) {
    return Buffer.isBuffer(item) ? item : Buffer.from(item.buffer, item.byteOffset, item.byteLength);
  }
  throw new InvalidJobError(`a frame must be a Buffer or a file path, got ${typeof item}`, 'missing_image');
}

function isAsyncIterable(x: unknown): x is AsyncIterable<FrameItem> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

function isIterable(x: unknown): x is Iterable<FrameItem> {
  return typeof x === 'object' && x !== null && Symbol.iterator in x;
}

/**
 * The frames of `source` and how many there are: `count` is known for a directory and an array,
 * `length` when given, else the source is read whole (the items, not yet the files they name).
 */
export async function openSource(
  source: FrameSource,
  length: number | undefined,
): Promise<{ count: number; items: AsyncIterator<FrameItem> | Iterator<FrameItem> }> {
  if (typeof source === 'string') {
    const files = await imagesIn(source);
    return { count: files.length, items: files[Symbol.iterator]() };
  }
  if (Array.isArray(source)) {
    return { count: source.length, items: (source as readonly FrameItem[])[Symbol.iterator]() };
  }
  if (isAsyncIterable(source)) {
    if (length !== undefined) return { count: length, items: source[Symbol.asyncIterator]() };
    const all: FrameItem[] = [];
    for await (const item of source) all.push(item);
    return { count: all.length, items: all[Symbol.iterator]() };
  }
  if (isIterable(source)) {
    if (length !== undefined) return { count: length, items: source[Symbol.iterator]() };
    const all = Array.from(source);
    return { count: all.length, items: all[Symbol.iterator]() };
  }
  throw new InvalidJobError(
    'frames must be a directory path, an array of Buffers or paths, or an (async) iterable of them',
    'missing_image',
  );
}
