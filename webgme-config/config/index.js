/*eslint-env node*/
// Picks config/config.<NODE_ENV>.js (default: config.default.js), applies WEBGME_<a>_<b> env overrides,
// and validates the result with webgme-engine's validator.
'use strict';

var env = process.env.NODE_ENV || 'default',
    configFilename = __dirname + '/config.' + env + '.js',
    config = require(configFilename),
    overrideFromEnv = require('webgme/config/overridefromenv'),
    validateConfig = require('webgme-engine/config/validator').validateConfig;

// WEBGME_PYTHON names the interpreter of the Python plugins (webgme-bindings), not a config key.
(function () {
    var python = process.env.WEBGME_PYTHON;
    delete process.env.WEBGME_PYTHON;
    overrideFromEnv(config);
    if (python !== undefined) {
        process.env.WEBGME_PYTHON = python;
    }
})();
validateConfig(config);

module.exports = config;
