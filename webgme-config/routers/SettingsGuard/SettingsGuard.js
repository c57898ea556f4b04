/*eslint-env node*/
/**
 * No secret in user or project settings: strips secret fields from what a client asks WebGME to store.
 *
 * Mounted at /api (config.rest.components.SettingsGuard), so it sees a request before webgme's own API
 * (external REST components are mounted first); it changes the parsed JSON body and hands the request on.
 * Guarded, with or without the /v1 prefix, PUT and PATCH of:
 *   /user/settings[/:componentId]             (WebGME's "Save these settings in the current user")
 *   /users/:username/settings[/:componentId]
 *   /user, /users/:username                   only their `settings` member
 *   /projects/:ownerId/:projectName           project info (PATCH)
 * A key is stripped, at any depth, when its last dot-separated segment is the name of a field some installed
 * storage or compute backend marks secret (`isAuth`): `storage.s3.secretAccessKey`, or `token` inside
 * DeepForge's `{"storage": {"id", "config": {...}}}` shape.  The names are the `secretFields` of the plugins'
 * metadata.json files (deepforge_plugins/metadata.py writes them), read from every plugin base path at start.
 * The target dialog (webgme-config/src/widgets/TargetConfig) already leaves secrets out; this guard is for any
 * other client.  Never logs a value, only how many keys it dropped.
 */
'use strict';

const express = require('express');
const fs = require('fs');
const path = require('path');

const router = express.Router();
let logger = null;
let secretNames = new Set();

function readSecretNames(basePaths) {
    const names = new Set();
    (basePaths || []).forEach(base => {
        let entries = [];
        try {
            entries = fs.readdirSync(base);
        } catch (err) {
            return;
        }
        entries.forEach(entry => {
            let metadata;
            try {
                metadata = JSON.parse(fs.readFileSync(path.join(base, entry, 'metadata.json'), 'utf8'));
            } catch (err) {
                return;  // not a plugin dir, or no metadata.json
            }
            (metadata.secretFields || []).forEach(name => names.add(String(name)));
            (metadata.configStructure || []).forEach(item => {
                if (item && item.isAuth && item.name) {
                    names.add(String(item.name).split('.').pop());
                }
            });
        });
    });
    return names;
}

function isSecret(key) {
    return secretNames.has(String(key).split('.').pop());
}

/** `value` without secret keys (a new object); `dropped.count` counts them. */
function strip(value, dropped) {
    if (Array.isArray(value)) {
        return value.map(v => strip(v, dropped));
    }
    if (value && typeof value === 'object') {
        const out = {};
        Object.keys(value).forEach(key => {
            if (isSecret(key)) {
                dropped.count += 1;
            } else {
                out[key] = strip(value[key], dropped);
            }
        });
        return out;
    }
    return value;
}

function guard(member) {
    return (req, res, next) => {
        const dropped = {count: 0};
        if (req.body && typeof req.body === 'object') {
            if (member) {
                if (req.body[member] && typeof req.body[member] === 'object') {
                    req.body[member] = strip(req.body[member], dropped);
                }
            } else {
                req.body = strip(req.body, dropped);
            }
        }
        if (dropped.count) {
            logger.info(`SettingsGuard: ${req.method} ${req.baseUrl}${req.path}: dropped ${dropped.count} ` +
                'secret field(s); secrets are never stored in settings');
        }
        next();
    };
}

const V1 = '(/v1)?';

function initialize(middlewareOpts) {
    const gmeConfig = middlewareOpts.gmeConfig;
    logger = middlewareOpts.logger.fork('SettingsGuard');
    secretNames = readSecretNames(gmeConfig.plugin.basePaths);
    logger.debug(`SettingsGuard: ${secretNames.size} secret field names`);

    const settings = [`${V1}/user/settings`, `${V1}/user/settings/:componentId`,
        `${V1}/users/:username/settings`, `${V1}/users/:username/settings/:componentId`];
    const users = [`${V1}/user`, `${V1}/users/:username`];
    const projects = [`${V1}/projects/:ownerId/:projectName`];
    ['put', 'patch'].forEach(method => {
        router[method](settings, guard(null));
        router[method](users, guard('settings'));
    });
    router.patch(projects, guard(null));
}

function start(callback) {
    callback();
}

function stop(callback) {
    callback();
}

module.exports = {initialize, router, start, stop, strip, readSecretNames};
