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

// A worker's final report is applied only while the job is still RUNNING under that worker.  Stock
// updateJob reads the job, then replaces it by hash whatever happened in between: a worker whose job the
// server had requeued (not heard from for 5 refresh periods) and handed to another reported over the new
// run (the 1,000-job soak run counted one such `duplicated` job; the worker's own ownership check before
// its report leaves a window of one round trip).  The replace is now conditional on {status: RUNNING,
// worker: <the reporter>}; a report that no longer matches is refused as 404 (the worker drops it).
// Updates without a worker field or with an unfinished status (the Node worker's) are applied as before.
const JobInfo = requireJS('common/executor/JobInfo');
const originalUpdateJob = Symbol('originalUpdateJob');

async function updateJob(userId, info) {
    const fenced = info && typeof info.worker === 'string' && info.worker && JobInfo.isFinishedStatus(info.status);
    if (!fenced) {
        return this[originalUpdateJob](userId, info);
    }
    const query = Object.assign(this.getJobQuery(userId, info.hash), {status: 'RUNNING', worker: info.worker});
    const doc = await this.jobList.findOne(query);
    if (!doc) {
        throw new Error('Not Found');  // requeued, given to another worker, or finished: a late report
    }
    const jobInfo = new JobInfo(doc);
    const jobInfoUpdate = new JobInfo(info);
    for (const key in jobInfoUpdate) {
        const value = jobInfoUpdate[key];
        if (value !== null && (!(value instanceof Array) || value.length !== 0)) {
            jobInfo[key] = value;
        }
    }
    jobInfo.secret = doc.secret;
    const result = await this.jobList.replaceOne(query, jobInfo);
    if (!result || result.matchedCount === 0) {
        throw new Error('Not Found');  // requeued between the read and the replace
    }
    if (jobInfo.outputNumber !== null && this.gmeConfig.executor.clearOutputTimeout > -1) {
        this.startClearOutputTimer(jobInfo);
    }
}

function claimOnce(master) {
    const proto = Object.getPrototypeOf(master);
    if (proto.startQueuedJobs !== startQueuedJobs) {
        proto.startQueuedJobs = startQueuedJobs;
    }
    if (proto.updateJob !== updateJob) {
        proto[originalUpdateJob] = proto.updateJob;
        proto.updateJob = updateJob;
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
module.exports = {startQueuedJobs: startQueuedJobs, updateJob: updateJob};
