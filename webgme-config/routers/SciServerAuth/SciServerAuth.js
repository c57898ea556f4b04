/*eslint-env node*/
/**
 * /routers/SciServerAuth: link a SciServer account to a WebGME user once (DeepForge's SciServerAuth router).
 *
 * The SciServer token stays on the server, per WebGME user; the sciserver-files and sciserver-compute
 * backends of the Python plugins fetch it for the user who runs them, so their dialogs need only the
 * SciServer `username` (an auth field: never stored in the model), not a password every time.
 *
 *   GET    /routers/SciServerAuth                 the SciServer user names linked to you (JSON list; the
 *                                                 dialogs' `valueItemsURL`, as DeepForge's)
 *   POST   /routers/SciServerAuth/login           {"username", "password"}: log in to SciServer now and keep
 *                                                 the token (the password is used once, never stored)
 *   GET    /routers/SciServerAuth/register?token= DeepForge's callback from SciServer's login portal: keep a
 *                                                 token the portal issued (validated, its user name read)
 *   DELETE /routers/SciServerAuth/:name           unlink
 *   GET    /routers/SciServerAuth/:name/token     the token, for the plugins only: the request must carry
 *                                                 `X-DeepForge-Link-Key` (the server's own key, which its
 *                                                 plugin processes inherit); never for a browser
 *
 * Every route acts for the WebGME user of the request (webgme's ensureAuthenticated: a session, a JWT, Basic
 * auth; the guest account when authentication is off): nobody lists, reads or removes another user's links.
 * Tokens expire 24 h after they were linked, as SciServer's do.  They are kept in a file readable by the
 * server's OS account only (`options.storeFile`, mode 0600) and never logged.
 *
 * options (config.rest.components.SciServerAuth.options):
 *   loginUrl   SciServer's login portal, Keystone v3 tokens (env DEEPFORGE_SCISERVER_LOGIN_URL)
 *   storeFile  where the links are kept
 * The key the token route demands is $DEEPFORGE_SCISERVER_LINK_KEY (config.default.js makes one when unset;
 * it is kept out of gmeConfig, which travels to other processes).
 */
'use strict';

const express = require('express');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const router = express.Router();
const TOKEN_LIFETIME_MS = 24 * 60 * 60 * 1000;
const LINK_KEY_HEADER = 'x-deepforge-link-key';
const TASK = 'DeepForge.Adapters.Link';

let options = {};
let logger = null;
let links = {};  // WebGME user id -> SciServer user name -> {token, loginUrl, createdAt}

class LinkError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}

function load() {
    try {
        links = JSON.parse(fs.readFileSync(options.storeFile, 'utf8')) || {};
    } catch (err) {
        if (err.code !== 'ENOENT') {
            logger.error(`cannot read the SciServer links file ${options.storeFile}: ${err.message}; starting empty`);
        }
        links = {};
    }
}

function save() {
    fs.mkdirSync(path.dirname(options.storeFile), {recursive: true});
    const tmp = `${options.storeFile}.${process.pid}.${crypto.randomBytes(6).toString('hex')}`;
    fs.writeFileSync(tmp, JSON.stringify(links), {mode: 0o600});
    fs.renameSync(tmp, options.storeFile);
}

function userLinks(userId) {
    const now = Date.now();
    const mine = links[userId] || {};
    Object.keys(mine).forEach(name => {
        if (now - mine[name].createdAt >= TOKEN_LIFETIME_MS) {
            delete mine[name];
        }
    });
    return mine;
}

function keep(userId, name, token) {
    links[userId] = userLinks(userId);
    links[userId][name] = {token, loginUrl: options.loginUrl, createdAt: Date.now()};
    save();
    logger.info(`SciServer account "${name}" linked for WebGME user "${userId}"`);
}

function portalMessage(text) {
    try {
        const body = JSON.parse(text);
        return (body.error && (body.error.message || body.error)) || text;
    } catch (err) {
        return text;
    }
}

async function login(name, password) {
    const body = {auth: {identity: {password: {user: {name, password}}}}};
    let response;
    try {
        response = await fetch(`${options.loginUrl}?TaskName=${TASK}`, {
            method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify(body),
            redirect: 'manual',
        });
    } catch (err) {
        throw new LinkError(502, `cannot reach the SciServer login portal: ${err.name}`);
    }
    const token = response.headers.get('x-subject-token');
    if (response.status !== 200 || !token) {
        const reason = String(portalMessage(await response.text())).slice(0, 300);
        throw new LinkError(401, `SciServer login failed for user "${name}": HTTP ${response.status}: ${reason}`);
    }
    return token;
}

async function tokenUser(token) {
    let response;
    try {
        response = await fetch(`${options.loginUrl}/${encodeURIComponent(token)}?TaskName=${TASK}`,
            {redirect: 'manual'});
    } catch (err) {
        throw new LinkError(502, `cannot reach the SciServer login portal: ${err.name}`);
    }
    if (response.status !== 200) {
        throw new LinkError(401, `SciServer did not accept the token (HTTP ${response.status})`);
    }
    try {
        return String((await response.json()).token.user.name);
    } catch (err) {
        throw new LinkError(502, 'unexpected token document from the SciServer login portal');
    }
}

function sameKey(given) {
    const a = Buffer.from(String(given || ''));
    const b = Buffer.from(String(process.env.DEEPFORGE_SCISERVER_LINK_KEY || ''));
    return b.length > 0 && a.length === b.length && crypto.timingSafeEqual(a, b);
}

function fail(res, err) {
    if (err instanceof LinkError) {
        return res.status(err.status).json({error: err.message});
    }
    logger.error(`SciServerAuth: ${err.name}`);
    return res.status(500).json({error: 'internal error'});
}

function initialize(middlewareOpts) {
    const gmeConfig = middlewareOpts.gmeConfig;
    logger = middlewareOpts.logger.fork('SciServerAuth');
    options = Object.assign({}, (gmeConfig.rest.components.SciServerAuth || {}).options);
    options.loginUrl = String(options.loginUrl || '').replace(/\/+$/, '');
    const userOf = req => middlewareOpts.getUserId(req) || gmeConfig.authentication.guestAccount;

    router.use(middlewareOpts.ensureAuthenticated);
    router.use((req, res, next) => {
        res.set('Cache-Control', 'no-store');
        next();
    });

    router.get('/', (req, res) => res.json(Object.keys(userLinks(userOf(req))).sort()));

    // The body is JSON already: webgme's server parses every request (bodyParser.json, gmeConfig.server.bodyParser).
    router.post('/login', async (req, res) => {
        const {username, password} = req.body || {};
        if (typeof username !== 'string' || !username || typeof password !== 'string' || !password) {
            return res.status(400).json({error: 'give the SciServer "username" and "password" as JSON'});
        }
        try {
            const token = await login(username, password);
            keep(userOf(req), username, token);
            res.json({username});
        } catch (err) {
            fail(res, err);
        }
    });

    router.get('/register', async (req, res) => {
        const token = req.query.token;
        if (typeof token !== 'string' || !token) {
            return res.status(400).json({error: 'no token: SciServer\'s login portal calls this with ?token='});
        }
        try {
            const name = await tokenUser(token);
            keep(userOf(req), name, token);
            res.type('text/plain').send(`SciServer account "${name}" is now linked to your WebGME account ` +
                'for the next 24 hours.');
        } catch (err) {
            fail(res, err);
        }
    });

    router.use((err, req, res, next) => {  // eslint-disable-line no-unused-vars
        logger.error(`SciServerAuth: ${req.method} ${req.path}: ${err.message}`);
        res.status(err.status || err.statusCode || 500).json({error: err.expose ? err.message : 'internal error'});
    });

    router.delete('/:name', (req, res) => {
        const userId = userOf(req);
        const mine = userLinks(userId);
        if (!mine[req.params.name]) {
            return res.status(404).json({error: `no SciServer account "${req.params.name}" is linked to you`});
        }
        delete mine[req.params.name];
        save();
        res.status(204).end();
    });

    router.get('/:name/token', (req, res) => {
        if (!sameKey(req.get(LINK_KEY_HEADER))) {
            return res.status(403).json({error: 'SciServer tokens are handed to the server\'s plugins only'});
        }
        const link = userLinks(userOf(req))[req.params.name];
        if (!link) {
            return res.status(404).json({
                error: `no SciServer account "${req.params.name}" is linked to your WebGME account ` +
                    '(or its link expired): link it with POST /routers/SciServerAuth/login'
            });
        }
        res.json({username: req.params.name, token: link.token, loginUrl: link.loginUrl});
    });
}

function start(callback) {
    load();
    callback();
}

function stop(callback) {
    callback();
}

module.exports = {initialize, router, start, stop};
