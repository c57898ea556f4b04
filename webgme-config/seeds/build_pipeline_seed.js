/*eslint-env node*/
/*eslint no-console: 0*/
/**
 * Builds seeds/pipeline.webgmex: the DeepForge-compatible pipeline metamodel (deepforge-execution.md §1.2)
 * plus the root containers of a DeepForge project and an example pipeline for the demo.
 *
 * The metamodel is the table META below; edit it and regenerate with `make seed` (which runs this script
 * against a throw-away database).  The generated file is committed, so installs never need to run it.
 *
 * Usage: DEEPFORGE_MONGO_URI=mongodb://127.0.0.1:PORT/db node seeds/build_pipeline_seed.js seeds/pipeline.webgmex
 */
'use strict';

const path = require('path');
const fs = require('fs');
const AdmZip = require('adm-zip');
const webgme = require('webgme-engine');
const gmeConfig = require('../config');

webgme.addToRequireJsPaths(gmeConfig);
const Core = webgme.requirejs('common/core/coreQ');
const storageUtils = webgme.requirejs('common/storage/util');

// 'canceling': a cancel request from any session (the running ExecutePipeline polls for it; see CancelExecution)
const STATUS_EXECUTION = ['pending', 'running', 'canceling', 'success', 'failed', 'canceled'];
const STATUS_JOB = ['pending', 'queued', 'running', 'canceled', 'success', 'failed'];

// name: {base, attributes: {name: rule (+ default)}, pointers: {name: [target, min, max]},
//        sets: {name: target}, children: {child: [min, max]}, mixins: [...], abstract}
const META = {
    Code: {base: 'FCO', attributes: {code: {type: 'string', multiline: true, default: ''}}},
    WithProvenance: {
        base: 'FCO', abstract: true,
        attributes: {provOutput: {type: 'string', default: ''}},
        pointers: {provenance: ['ImplicitOperation', 0, 1]}
    },
    Metadata: {base: 'FCO', attributes: {id: {type: 'string', default: ''}}},
    Graph: {base: 'Metadata', attributes: {data: {type: 'string', multiline: true, default: ''}}},
    Data: {
        base: 'FCO', mixins: ['WithProvenance'],
        attributes: {
            // a JSON dataInfo {"backend": ..., "data": ...}; DeepForge's type is userAsset, which
            // webgme-engine doesn't define: a string keeps the value byte-identical.
            data: {type: 'string', default: ''},
            type: {type: 'string', default: ''},
            createdAt: {type: 'integer', default: 0}
        },
        children: {Metadata: [0, -1]}
    },
    Inputs: {base: 'FCO', children: {Data: [0, -1]}},
    Outputs: {base: 'FCO', children: {Data: [0, -1]}},
    Operation: {
        base: 'FCO',
        attributes: {
            code: {type: 'string', multiline: true, default: ''},
            lineOffset: {type: 'string', default: '0'},
            displayColor: {type: 'string', default: ''},
            condaEnv: {type: 'string', multiline: true, default: ''}
        },
        children: {Inputs: [1, 1], Outputs: [1, 1]}
    },
    Input: {base: 'Operation', pointers: {artifact: ['Data', 0, 1]}},
    Output: {base: 'Operation', attributes: {saveName: {type: 'string', default: 'myData'}}},
    ImplicitOperation: {base: 'FCO', pointers: {operation: ['Operation', 0, 1]}, children: {Operation: [0, -1]}},
    ExecutedJob: {base: 'ImplicitOperation'},
    Transporter: {base: 'FCO', pointers: {src: ['Data', 0, 1], dst: ['Data', 0, 1]}},
    Job: {
        base: 'FCO',
        attributes: {
            status: {type: 'string', enum: STATUS_JOB, default: 'pending'},
            stdout: {type: 'string', multiline: true, default: ''},
            execFiles: {type: 'asset', default: ''},
            executionId: {type: 'string', default: ''},
            jobInfo: {type: 'string', default: ''},
            debug: {type: 'boolean', default: false}
        },
        children: {Operation: [1, 1], Metadata: [0, -1]}
    },
    Execution: {
        base: 'FCO',
        attributes: {
            status: {type: 'string', enum: STATUS_EXECUTION, default: 'pending'},
            snapshot: {type: 'boolean', default: true},
            tagname: {type: 'string', default: ''},
            createdAt: {type: 'integer', default: 0},
            startTime: {type: 'integer', default: 0},
            endTime: {type: 'integer', default: 0},
            executionId: {type: 'string', default: ''},
            runId: {type: 'string', default: ''}
        },
        pointers: {origin: ['Pipeline', 0, 1]},
        children: {Job: [0, -1], Transporter: [0, -1]}
    },
    Pipeline: {
        base: 'FCO',
        attributes: {thumbnail: {type: 'string', default: ''}},
        sets: {executions: 'Execution'},
        children: {Operation: [0, -1], Transporter: [0, -1]}
    },
    PipelineFolder: {base: 'FCO', children: {Pipeline: [0, -1]}},
    ExecutionFolder: {base: 'FCO', children: {Execution: [0, -1]}},
    ArtifactFolder: {base: 'FCO', children: {Data: [0, -1]}},
    OperationFolder: {base: 'FCO', children: {Operation: [0, -1]}},
    CodeFolder: {base: 'FCO', children: {Code: [0, -1]}}
};

// The UI's "Execute plug-in" menu lists only the plugins named in the active node's validPlugins registry
// (inherited by instances, so set on the meta nodes; '' is the root): meta type -> plugin ids.
const VALID_PLUGINS = {
    '': ['ImportPipeline', 'UploadArtifact'],
    PipelineFolder: ['ImportPipeline'],
    ArtifactFolder: ['UploadArtifact'],
    Pipeline: ['ExecutePipeline', 'SetExecutionTargets'],
    Operation: ['SetExecutionTargets'],
    Execution: ['ExecutePipeline', 'CancelExecution'],
    Job: ['ExecuteJob']
};

// Root containers of a DeepForge project: name -> meta type.
const CONTAINERS = {
    MyPipelines: 'PipelineFolder', MyExecutions: 'ExecutionFolder', MyArtifacts: 'ArtifactFolder',
    MyOperations: 'OperationFolder', MyResources: 'ArtifactFolder', MyUtilities: 'CodeFolder',
    InitCode: 'Code', LibraryCode: 'Code'
};

// The example pipeline: operations (Python classes, DeepForge style: ports = execute() args and the
// returned names) wired by transporters.
const EXAMPLE = {
    name: 'Example',
    operations: {
        GenerateNumbers: {
            code: [
                'class GenerateNumbers():',
                '    def execute(self):',
                '        numbers = list(range(1, 11))',
                '        print("generated", len(numbers), "numbers")',
                '        return numbers',
                ''
            ].join('\n'),
            inputs: [], outputs: ['numbers'], position: {x: 150, y: 100}
        },
        SumNumbers: {
            code: [
                'class SumNumbers():',
                '    def execute(self, numbers):',
                '        total = sum(numbers)',
                '        print("sum:", total)',
                '        return total',
                ''
            ].join('\n'),
            inputs: ['numbers'], outputs: ['total'], position: {x: 150, y: 300}
        }
    },
    connections: [['GenerateNumbers', 'numbers', 'SumNumbers', 'numbers']]
};

async function build(core, root) {
    const metaSheet = core.getRegistry(root, 'MetaSheets')[0].SetID;
    const children = await core.loadChildren(root);
    const meta = {FCO: children.find(c => core.getAttribute(c, 'name') === 'FCO')};
    const order = Object.keys(META);
    order.forEach((name, i) => {
        const spec = META[name];
        const node = core.createNode({parent: root, base: meta[spec.base]});
        core.setAttribute(node, 'name', name);
        core.setRegistry(node, 'position', {x: 80 + 220 * (i % 5), y: 200 + 140 * Math.floor(i / 5)});
        core.addMember(root, 'MetaAspectSet', node);
        core.addMember(root, metaSheet, node);
        if (spec.abstract) {
            core.setRegistry(node, 'isAbstract', true);
        }
        meta[name] = node;
    });
    order.forEach(name => {
        const spec = META[name];
        const node = meta[name];
        Object.entries(spec.attributes || {}).forEach(([attr, rule]) => {
            const {default: value, ...metaRule} = rule;
            core.setAttributeMeta(node, attr, metaRule);
            core.setAttribute(node, attr, value);
        });
        Object.entries(spec.pointers || {}).forEach(([ptr, [target, min, max]]) => {
            core.setPointerMetaTarget(node, ptr, meta[target], -1, 1);
            core.setPointerMetaLimits(node, ptr, min, max);
        });
        Object.entries(spec.sets || {}).forEach(([set, target]) => {
            core.createSet(node, set);
            core.setPointerMetaTarget(node, set, meta[target], -1, -1);
            core.setPointerMetaLimits(node, set, -1, -1);
        });
        Object.entries(spec.children || {}).forEach(([child, [min, max]]) => {
            core.setChildMeta(node, meta[child], min, max);
        });
        (spec.mixins || []).forEach(mixin => core.addMixin(node, core.getPath(meta[mixin])));
    });
    Object.entries(VALID_PLUGINS).forEach(([name, ids]) => {
        core.setRegistry(name ? meta[name] : root, 'validPlugins', ids.join(' '));
    });
    Object.keys(META).filter(n => n.endsWith('Folder') || n === 'Code').forEach(name => {
        core.setChildMeta(root, meta[name], -1, -1);
    });

    const containers = {};
    Object.entries(CONTAINERS).forEach(([name, type], i) => {
        const node = core.createNode({parent: root, base: meta[type]});
        core.setAttribute(node, 'name', name);
        core.setRegistry(node, 'position', {x: 100 + 200 * i, y: 60});
        containers[name] = node;
    });
    core.setAttribute(containers.InitCode, 'code', '# runs before every operation (imports, settings)\n');
    core.setAttribute(containers.LibraryCode, 'code', '# helpers shared by every operation\n');

    const pipeline = core.createNode({parent: containers.MyPipelines, base: meta.Pipeline});
    core.setAttribute(pipeline, 'name', EXAMPLE.name);
    const ports = {};
    Object.entries(EXAMPLE.operations).forEach(([name, op]) => {
        // the reusable definition lives in MyOperations; the pipeline holds an instance of it
        const def = core.createNode({parent: containers.MyOperations, base: meta.Operation});
        core.setAttribute(def, 'name', name);
        core.setAttribute(def, 'code', op.code);
        const defInputs = core.createNode({parent: def, base: meta.Inputs});
        const defOutputs = core.createNode({parent: def, base: meta.Outputs});
        op.inputs.forEach(p => core.setAttribute(core.createNode({parent: defInputs, base: meta.Data}), 'name', p));
        op.outputs.forEach(p => core.setAttribute(core.createNode({parent: defOutputs, base: meta.Data}), 'name', p));
        core.setAttribute(defInputs, 'name', 'Inputs');
        core.setAttribute(defOutputs, 'name', 'Outputs');
        const inst = core.createNode({parent: pipeline, base: def});
        core.setRegistry(inst, 'position', op.position);
        ports[name] = inst;
    });
    for (const [srcOp, srcPort, dstOp, dstPort] of EXAMPLE.connections) {
        const src = await findPort(core, ports[srcOp], 'Outputs', srcPort);
        const dst = await findPort(core, ports[dstOp], 'Inputs', dstPort);
        const conn = core.createNode({parent: pipeline, base: meta.Transporter});
        core.setPointer(conn, 'src', src);
        core.setPointer(conn, 'dst', dst);
    }
}

async function findPort(core, operation, containerName, portName) {
    const containers = await core.loadChildren(operation);
    const container = containers.find(c => core.getAttribute(c, 'name') === containerName);
    const ports = await core.loadChildren(container);
    const port = ports.find(p => core.getAttribute(p, 'name') === portName);
    if (!port) {
        throw new Error(`no ${containerName} port ${portName} on ${core.getAttribute(operation, 'name')}`);
    }
    return port;
}

async function main(outFile) {
    const logger = webgme.Logger.create('gme:seed:pipeline', gmeConfig.bin.log, false);
    const gmeAuth = await webgme.getGmeAuth(gmeConfig);
    const storage = webgme.getStorage(logger.fork('storage'), gmeConfig, gmeAuth);
    await storage.openDatabase();
    const projectName = 'pipelineSeedBuild' + Date.now();
    try {
        const project = await storage.createProject({projectName, username: gmeConfig.authentication.guestAccount});
        const emptySeed = path.join(path.dirname(require.resolve('webgme-engine')), 'seeds', 'EmptyProject.webgmex');
        const emptyJson = JSON.parse(new AdmZip(emptySeed).readAsText('project.json'));
        let result = await storageUtils.insertProjectJson(project, emptyJson, {commitMessage: 'empty project'});
        await project.createBranch('master', result.hash);

        const core = new Core(project, {globConf: gmeConfig, logger: logger.fork('core')});
        const root = await core.loadRoot(emptyJson.rootHash);
        await build(core, root);
        const persisted = core.persist(root);
        result = await project.makeCommit('master', [result.hash], persisted.rootHash, persisted.objects,
            'DeepForge pipeline metamodel and an example pipeline');
        if (result.status !== 'SYNCED') {
            throw new Error('commit not synced: ' + JSON.stringify(result));
        }
        const json = await storageUtils.getProjectJson(project, {branchName: 'master'});
        json.projectId = 'guest+pipeline';
        const zip = new AdmZip();
        zip.addFile('project.json', Buffer.from(JSON.stringify(json, null, 2), 'utf8'));
        fs.writeFileSync(outFile, zip.toBuffer());
        console.log(`wrote ${outFile}: ${json.objects.length} objects, root ${json.rootHash}`);
    } finally {
        await storage.deleteProject({projectId: gmeConfig.authentication.guestAccount + '+' + projectName})
            .catch(() => null);
        await storage.closeDatabase();
        await gmeAuth.unload();
    }
}

main(process.argv[2] || path.join(__dirname, 'pipeline.webgmex')).catch(err => {
    console.error(err);
    process.exit(1);
});
