/*eslint-env node*/
// The executor hands each queued job to one worker only.
//
// webgme-engine 2.31.0's ExecutorMaster.startQueuedJobs reads the CREATED jobs, then claims each with
// updateOne({_id, status: 'CREATED'}, {$set: {status: 'RUNNING', worker}}) and keeps it `if (numReplaced)`:
// that is the driver's UpdateResult, an object, always truthy.  Workers whose polls read the queue before
// either claim all got the job and all ran it (the soak run found one job started on three workers within
// 0.2 s; tests/integration/test_webgme_executor_claims.py).  Here a claim counts only when it changed the job.
//
// ExecutorMaster is not exported: the ExecutorServer constructor is wrapped (in the require cache, before
// webgme's standalone server requires it) so that its master's prototype is patched once it exists.
'use strict';

const filename = require.resolve('webgme-engine/src/server/middleware/executor/ExecutorServer');
const ExecutorServer = require(filename);

async function startQueuedJobs(userId, clientId, labels = [], count = 10) {
    const startedHashes = [];
    const docs = await this.jobList.find({
        status: 'CREATED',
        userId: {$in: [userId]},
        labels: {$not: {$elemMatch: {$nin: labels}}}
    }).limit(count).toArray();

    for (let i = 0; i < docs.length; i++) {
        const result = await this.jobList.updateOne({_id: docs[i]._id, status: 'CREATED'}, {
            $set: {status: 'RUNNING', worker: clientId}
        });
        if (result && result.modifiedCount > 0) {  // another poll claimed it first: not ours
            startedHashes.push(docs[i].hash);
        }
    }
    return startedHashes;
}

function claimOnce(master) {
    const proto = Object.getPrototypeOf(master);
    if (proto.startQueuedJobs !== startQueuedJobs) {
        proto.startQueuedJobs = startQueuedJobs;
    }
}

function ClaimOnceExecutorServer() {
    ExecutorServer.apply(this, arguments);
    const self = this;
    const start = this.start;
    this.start = function (params, callback) {
        const started = Promise.resolve(start.call(self, params)).then(function (value) {
            if (self.master) {
                claimOnce(self.master);
            }
            return value;
        });
        if (typeof callback === 'function') {
            started.then(function (value) { callback(null, value); }, callback);
            return undefined;
        }
        return started;
    };
}
ClaimOnceExecutorServer.prototype = ExecutorServer.prototype;

require.cache[filename].exports = ClaimOnceExecutorServer;
module.exports = {startQueuedJobs: startQueuedJobs};
