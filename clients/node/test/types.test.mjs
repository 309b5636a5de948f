// src/generated/ is what `npm run gen-types` makes of schemas/*.schema.json: regenerated here in
// memory and compared with the committed files.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { generate, GENERATED_DIR } from '../scripts/gen-types.mjs';

const FIX = 'run `npm run gen-types` in clients/node and commit src/generated/';

test('the generated types match the JSON Schemas', async () => {
  const modules = await generate();
  assert.ok(modules.size >= 5, 'a module per schema: job, result, video frame, video done, model');
  assert.deepEqual(readdirSync(GENERATED_DIR).sort(), [...modules.keys()].sort(), `src/generated/ has other modules than schemas/: ${FIX}`);
  for (const [name, text] of modules) {
    const committed = readFileSync(join(GENERATED_DIR, name), 'utf8');
    assert.ok(committed === text, `src/generated/${name} differs from what schemas/ generate: ${FIX}`);
  }
});
