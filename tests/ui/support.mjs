// What the browser tests need from the machine: the dev PostgreSQL clusters (dev/pg.sh), the Tailspin
// sample under unique names, and the real `milink up`, started the way tests/src/milink.rs starts it.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, openSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import net from 'node:net';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function screenshotDir() {
  const dir = process.env.MILINK_UI_SCREENSHOTS || join(root, 'target', 'ui-screenshots');
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function unique(prefix) {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

function pgEnv() {
  const text = execFileSync('bash', [join(root, 'dev/pg.sh'), 'env'], { encoding: 'utf8' });
  return Object.fromEntries([...text.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
}

export const pg = pgEnv();
const password = readFileSync(pg.MILINK_PG_PASSWORD_FILE, 'utf8').trim();

function psql(url, args) {
  execFileSync('psql', [url, '-q', '-v', 'ON_ERROR_STOP=1', ...args], { env: { ...process.env, PGPASSWORD: password }, stdio: ['ignore', 'ignore', 'pipe'] });
}

const onDatabase = (url, database) => url.replace(/\/postgres$/, `/${database}`);

export function dropEverywhere(database, { bestEffort = false } = {}) {
  for (const url of [pg.MILINK_PG_SOURCE_URL, pg.MILINK_PG_TARGET_URL]) {
    try {
      psql(url, ['-c', `DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`]);
    } catch (error) {
      // Cleanup after a failure must not hide the failure.
      if (!bestEffort) throw error;
    }
  }
}

// Loads dev/tailspin/<file> into a new source database named `database` (the SQL has no CREATE DATABASE).
export function loadSample(database, file) {
  dropEverywhere(database);
  psql(pg.MILINK_PG_SOURCE_URL, ['-c', `CREATE DATABASE "${database}"`]);
  psql(onDatabase(pg.MILINK_PG_SOURCE_URL, database), ['-f', join(root, 'dev/tailspin', file)]);
}

// An application session on `database` of the source, idle like a connection pool's, announcing
// `application` as its name: what the assessment's connection summary must list. `end()` closes it.
export function applicationSession(database, application) {
  const child = spawn('psql', [onDatabase(pg.MILINK_PG_SOURCE_URL, database), '-q'], {
    env: { ...process.env, PGPASSWORD: password, PGAPPNAME: application }, stdio: ['pipe', 'ignore', 'ignore'],
  });
  return { end: () => { child.stdin.end(); child.kill('SIGTERM'); } };
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)); });
    server.on('error', reject);
  });
}

// Starts `milink up` with connections src and dst; `token` protects it (every request but health needs it).
export async function startMilink({ token } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'milink-ui-'));
  const port = await freePort();
  writeFileSync(join(dir, 'milink.toml'), [
    '[server]', `listen = "127.0.0.1:${port}"`, 'state = "state.db"', 'poll_interval_ms = 200', 'max_attempts = 5', 'retry_base_ms = 100', 'retry_max_ms = 2000', '',
    '[connections.src]', 'engine = "postgres"', `url = "${pg.MILINK_PG_SOURCE_URL}"`, `password_file = "${pg.MILINK_PG_PASSWORD_FILE}"`, '',
    '[connections.dst]', 'engine = "postgres"', `url = "${pg.MILINK_PG_TARGET_URL}"`, `password_file = "${pg.MILINK_PG_PASSWORD_FILE}"`, '',
  ].join('\n'));
  const binary = process.env.MILINK_BIN || join(root, 'target/debug/milink');
  const log = join(dir, 'milink.log');
  const env = { ...process.env, MILINK_LOG: 'info' };
  delete env.MILINK_TOKEN;
  if (token) env.MILINK_TOKEN = token;
  const child = spawn(binary, ['up', '--config', 'milink.toml'], { cwd: dir, env, stdio: ['ignore', 'ignore', openSync(log, 'w')] });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      if ((await fetch(`${base}/api/health`)).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`milink did not start:\n${readFileSync(log, 'utf8')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    base,
    logs: () => readFileSync(log, 'utf8'),
    api: async (path) => (await fetch(`${base}/api${path}`, { headers: token ? { Authorization: `Bearer ${token}` } : {} })).json(),
    stop: () => { child.kill('SIGTERM'); },
  };
}

// Buttons, links and form fields without an accessible name (text, label, aria-label).
export const unnamed = (page) => page.evaluate(() => [...document.querySelectorAll('button, a[href], input, select')]
  .filter((el) => {
    const labelled = el.labels && [...el.labels].some((l) => l.textContent.trim());
    return !labelled && !el.textContent.trim() && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby');
  })
  .map((el) => el.outerHTML));
