// Browser end-to-end check of the counsellor web client (driven by tests/browser/test_web_client.py).
//
// Loads BASE_URL/chat/ in Debian's headless Chromium (playwright-core, never a downloaded browser), logs in
// as the counsellor, waits for EXPECT_TEXT from a young person's client, answers REPLY_TEXT and saves a
// screenshot. Speaks JSON lines on stdout so the Python test can act between the steps:
//   {"step":"logged-in"}  -> the Python side sends EXPECT_TEXT to the counsellor
//   {"step":"replied"}    -> the Python side checks its client received REPLY_TEXT
//   {"step":"done", ...}  -> requests that left the server's origin, CSP violations, page errors
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
    const value = process.env[name] ?? fallback;
    if (value === undefined) {
        throw new Error(`${name} must be set`);
    }
    return value;
};
const baseUrl = env('BASE_URL');
const username = env('COUNSELLOR_USER');
const password = env('COUNSELLOR_PASSWORD');
const expectText = env('EXPECT_TEXT');
const replyText = env('REPLY_TEXT');
const screenshot = env('SCREENSHOT');
const executablePath = env('CHROMIUM', '/usr/bin/chromium');
const stepTimeout = Number(env('STEP_TIMEOUT_MS', '20000'));

const say = (step, extra = {}) => process.stdout.write(JSON.stringify({ step, ...extra }) + '\n');
const origin = new URL(baseUrl).origin;
const wsOrigin = origin.replace(/^http/, 'ws');
const foreign = [];
const pageErrors = [];
const cspViolations = [];
const consoleLog = [];
const httpErrors = [];

const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
    ],
});
let page;
try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(stepTimeout);
    page.on('request', (request) => {
        const url = request.url();
        if (!url.startsWith(origin) && !url.startsWith(wsOrigin) && !url.startsWith('data:') && !url.startsWith('blob:')) {
            foreign.push(url);
        }
    });
    page.on('websocket', (ws) => {
        if (!ws.url().startsWith(wsOrigin)) {
            foreign.push(ws.url());
        }
    });
    page.on('response', (response) => {
        if (response.status() >= 400) {
            httpErrors.push(`${response.status()} ${response.url()}`);
        }
    });
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (msg) => {
        consoleLog.push(`${msg.type()}: ${msg.text()}`.slice(0, 500));
        if (msg.type() === 'error' && /Content.Security.Policy/i.test(msg.text())) {
            cspViolations.push(msg.text());
        }
    });

    const debug = process.env.E2E_DEBUG === '1';
    const response = await page.goto(`${baseUrl}/chat/${debug ? '#converse?loglevel=debug' : ''}`);
    if (response === null || response.status() !== 200) {
        throw new Error(`/chat/ answered ${response && response.status()}`);
    }
    const csp = response.headers()['content-security-policy'] ?? '';
    await page.locator('#converse-login-jid').waitFor();
    await page.screenshot({ path: screenshot.replace(/\.png$/, '-login.png') });
    await page.locator('#converse-login-jid').fill(username);
    await page.locator('#converse-login-password').fill(password);
    await page.locator('#converse-login button[type=submit]').click();
    await page.locator('.roster-contacts, converse-roster').first().waitFor({ state: 'attached' });
    await page.locator('#converse-login').waitFor({ state: 'detached' });
    say('logged-in', { csp });

    // A young person who is not on the counsellor's roster shows up in the list with an unread badge.
    const newChat = page.locator('a.open-chat', { hasText: process.env.EXPECT_FROM ?? '' }).first();
    await newChat.waitFor();
    await newChat.click();
    const incoming = page.locator('.chat-msg__text', { hasText: expectText });
    await incoming.first().waitFor();
    say('message-seen');

    const textarea = page.locator('converse-chat textarea.chat-textarea').first();
    await textarea.click();
    await textarea.fill(replyText);
    await textarea.press('Enter');
    await page.locator('.chat-msg__text', { hasText: replyText }).first().waitFor();
    say('replied');

    await page.screenshot({ path: screenshot, fullPage: true });
    say('done', { foreign, csp_violations: cspViolations, page_errors: pageErrors, http_errors: httpErrors });
} catch (error) {
    if (page) {
        await page.screenshot({ path: screenshot.replace(/\.png$/, '-failure.png'), fullPage: true }).catch(() => {});
    }
    say('failed', {
        error: String(error),
        foreign,
        csp_violations: cspViolations,
        page_errors: pageErrors,
        http_errors: httpErrors,
        console: consoleLog.slice(-80),
        roster: page ? await page.locator('body').innerText().catch(() => '') : '',
    });
    process.exitCode = 1;
} finally {
    await browser.close();
}
