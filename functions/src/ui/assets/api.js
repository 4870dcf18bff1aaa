// The only door to the server: JSON over the public API under /api, the same routes the CLI uses.
//
// Every request carries X-Milink-Request, which the embedded host requires of cookie-authenticated
// requests that change state (a cross-site form cannot send it). Served by the Azure host (under
// /api/ui/), the API wants a function key: the page asks for it once and keeps it in this tab's
// sessionStorage only, because the Functions host reads keys from a header, not from a cookie.

const onAzure = location.pathname.startsWith('/api/ui');
const KEY = 'milink-function-key';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function unauthorized() {
  if (!onAzure) {
    location.assign('/login');
    return false;
  }
  const key = window.prompt('This milink runs on Azure Functions. Enter a function key to use its API:');
  if (!key) return false;
  sessionStorage.setItem(KEY, key.trim());
  return true;
}

// A signed-in browser session (embedded host with a token) can end itself.
function offerSignOut() {
  const button = document.getElementById('sign-out');
  if (!button.hidden) return;
  button.hidden = false;
  button.addEventListener('click', async () => {
    await fetch('/logout', { method: 'POST', headers: { 'X-Milink-Request': '1' }, credentials: 'same-origin' });
    location.assign('/login');
  }, { once: true });
}

export async function api(path, { method = 'GET', body } = {}, retried = false) {
  const headers = { Accept: 'application/json', 'X-Milink-Request': '1' };
  const key = onAzure && sessionStorage.getItem(KEY);
  if (key) headers['x-functions-key'] = key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch('/api' + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.headers.get('x-milink-session') === 'cookie') offerSignOut();
  if (response.status === 401 && !retried && unauthorized()) {
    return api(path, { method, body }, true);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || response.statusText, error.details);
  }
  return data;
}

export const get = (path) => api(path);
export const post = (path, body = {}) => api(path, { method: 'POST', body });
