/*eslint-env node*/
// Starts the WebGME server (config from ./config, see config.default.js for the environment it reads).
'use strict';

var gmeConfig = require('./config'),
    webgme = require('webgme'),
    server;

webgme.addToRequireJsPaths(gmeConfig);
require('./executor_claims');  // after webgme (requireJS), before its server: one worker per queued job
require('./rest_tree_shards');  // the REST tree API reads below nodes whose overlay is sharded
server = new webgme.standaloneServer(gmeConfig);
server.start(function (err) {
    if (err) {
        console.error('WebGME server failed to start:', err);
        process.exit(1);
    }
    // Node >= 18 aborts any request not fully received within 5 minutes (requestTimeout): that would cut
    // multi-GiB artifact uploads over a slow link.  Idle sockets are still closed by keepAlive/headers timeouts.
    if (server.__httpServer) {
        server.__httpServer.requestTimeout = 0;
    }
    console.log('WebGME server listening on http://' + gmeConfig.server.handle.host + ':' +
        gmeConfig.server.port + ' (requestTimeout ' + (server.__httpServer && server.__httpServer.requestTimeout) + ')');
});

function stop(signal) {
    server.stop(function () {
        process.exit(signal === 'SIGINT' ? 130 : 0);
    });
}
process.on('SIGTERM', function () { stop('SIGTERM'); });
process.on('SIGINT', function () { stop('SIGINT'); });
