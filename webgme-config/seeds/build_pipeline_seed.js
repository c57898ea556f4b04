/*eslint-env node*/
/*eslint no-console: 0*/
/**
 * Builds seeds/pipeline.webgmex: DeepForge's `pipeline` library attached as a library named "pipeline" (its
 * meta names are then pipeline.Pipeline, pipeline.Operation, ...), the root containers of a DeepForge project
 * (MyPipelines, MyExecutions, MyArtifacts, ... each of its own meta type, as in DeepForge's project.webgmex),
 * and an example pipeline for the demo.
 *
 * The language is not re-typed here: it is DeepForge's own pipeline.webgmex (read from DeepForge's seeds
 * folder, see below) with only the additions in LIBRARY_ADDITIONS, documented in docs/protocols.md
 * ("Our seed"); tests/integration/test_webgme_seed.py diffs the result against DeepForge's file.
 * Regenerate with `make seed` (which runs this script against a throw-away database).  The generated file is
 * committed, so installs never need to run it.
 *
 * Usage: DEEPFORGE_MONGO_URI=mongodb://127.0.0.1:PORT/db node seeds/build_pipeline_seed.js OUT.webgmex [pipeline.webgmex]
 *   DeepForge's pipeline.webgmex: the second argument, else $DEEPFORGE_SEEDS_DIR/pipeline.webgmex, else the
 *   first shared/deepforge/seeds/pipeline.webgmex beside the repository or above it.
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

const LIBRARY = 'pipeline';
// DeepForge's own project id for its library (what a DeepForge project's library info names).
const LIBRARY_PROJECT_ID = 'guest+pipeline';

// Our additions to DeepForge's library, made before it is attached (a library's nodes are read-only once
// attached).  validPlugins: the UI's "Execute plug-in" menu lists only the plugins named in the active node's
// (inherited) validPlugins registry; DeepForge's own ids there are kept and ours appended.
const LIBRARY_ADDITIONS = {
    validPlugins: {
        Pipeline: ['ExecutePipeline', 'SetExecutionTargets'],
        Operation: ['SetExecutionTargets'],
        Execution: ['ExecutePipeline', 'CancelExecution'],
        Job: ['ExecuteJob', 'CancelExecution']
    }
};

// Root containers of a DeepForge project (its project.webgmex): each is a meta node of the project itself,
// holding what DeepForge's rule says ({children: library meta name}, {base: library meta name}, {pointers:
// {name: [target, min, max]}}, target '' = FCO), plus InitCode, an instance of the library's Code.
const CONTAINERS = {
    MyPipelines: {children: 'Pipeline'},
    MyExecutions: {children: 'Execution'},
    MyArtifacts: {children: 'Data'},
    MyOperations: {children: 'Operation'},
    MyResources: {},
    MyUtilities: {},
    LibraryCode: {base: 'Code', pointers: {library: ['', 1, 1]}}
};
// Our additions to the project's own nodes (not DeepForge's): the plugins offered on them.
const PROJECT_VALID_PLUGINS = {
    '': ['ImportPipeline', 'UploadArtifact'],
    MyPipelines: ['ImportPipeline'],
    MyArtifacts: ['UploadArtifact']
};

function findDeepForgeLibrary(explicit) {
    if (explicit) {
        return explicit;
    }
    if (process.env.DEEPFORGE_SEEDS_DIR) {
        return path.join(process.env.DEEPFORGE_SEEDS_DIR, 'pipeline.webgmex');
    }
    for (let dir = path.resolve(__dirname, '..', '..'); ; dir = path.dirname(dir)) {
        const candidate = path.join(dir, 'shared', 'deepforge', 'seeds', 'pipeline.webgmex');
        if (fs.existsSync(candidate)) {
            return candidate;
        }
        if (path.dirname(dir) === dir) {
            throw new Error('DeepForge\'s pipeline.webgmex not found: give its path as the second argument ' +
                'or set DEEPFORGE_SEEDS_DIR (looked for shared/deepforge/seeds beside the repository)');
        }
    }
}

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

/** Our additions to DeepForge's library, on its own root (before it is attached). */
function extendLibrary(core, libRoot) {
    const meta = core.getAllMetaNodes(libRoot);
    const byName = {};
    Object.values(meta).forEach(node => {
        byName[core.getAttribute(node, 'name')] = node;
    });
    Object.entries(LIBRARY_ADDITIONS.validPlugins).forEach(([name, ids]) => {
        const node = byName[name];
        if (!node) {
            throw new Error(`DeepForge's library has no meta node ${name}`);
        }
        const own = (core.getOwnRegistry(node, 'validPlugins') || '').split(/\s+/).filter(Boolean);
        core.setRegistry(node, 'validPlugins', own.concat(ids.filter(id => !own.includes(id))).join(' '));
    });
}

async function build(core, root) {
    const metaSheet = core.getRegistry(root, 'MetaSheets')[0].SetID;
    const all = core.getAllMetaNodes(root);
    const meta = {};
    Object.values(all).forEach(node => {
        meta[core.getFullyQualifiedName(node)] = node;
    });
    const lib = name => {
        const node = meta[`${LIBRARY}.${name}`];
        if (!node) {
            throw new Error(`the ${LIBRARY} library has no meta node ${name}`);
        }
        return node;
    };

    // DeepForge's project: its root containers are meta nodes of the project itself.
    const containers = {};
    Object.entries(CONTAINERS).forEach(([name, spec], i) => {
        const node = core.createNode({parent: root, base: spec.base ? lib(spec.base) : meta.FCO});
        core.setAttribute(node, 'name', name);
        core.setRegistry(node, 'position', {x: 100 + 160 * i, y: 60});
        core.addMember(root, 'MetaAspectSet', node);
        core.addMember(root, metaSheet, node);
        if (spec.children) {
            core.setChildMeta(node, lib(spec.children), -1, -1);
        }
        Object.entries(spec.pointers || {}).forEach(([ptr, [target, min, max]]) => {
            core.setPointerMetaTarget(node, ptr, target ? lib(target) : meta.FCO, -1, 1);
            core.setPointerMetaLimits(node, ptr, min, max);
        });
        containers[name] = meta[name] = node;
    });
    Object.entries(PROJECT_VALID_PLUGINS).forEach(([name, ids]) => {
        core.setRegistry(name ? meta[name] : root, 'validPlugins', ids.join(' '));
    });
    containers.InitCode = core.createNode({parent: root, base: lib('Code')});
    core.setAttribute(containers.InitCode, 'name', 'InitCode');
    core.setRegistry(containers.InitCode, 'position', {x: 100 + 160 * Object.keys(CONTAINERS).length, y: 60});
    core.setAttribute(containers.InitCode, 'code', '# runs before every operation (imports, settings)\n');

    const pipeline = core.createNode({parent: containers.MyPipelines, base: lib('Pipeline')});
    core.setAttribute(pipeline, 'name', EXAMPLE.name);
    const ports = {};
    for (const [name, op] of Object.entries(EXAMPLE.operations)) {
        // the reusable definition lives in MyOperations; the pipeline holds an instance of it.  DeepForge's
        // Operation has its Inputs and Outputs children already: the ports go into those.
        const def = core.createNode({parent: containers.MyOperations, base: lib('Operation')});
        core.setAttribute(def, 'name', name);
        core.setAttribute(def, 'code', op.code);
        const [defInputs, defOutputs] = await Promise.all(['Inputs', 'Outputs']
            .map(kind => portBox(core, def, lib(kind))));
        op.inputs.forEach(p => core.setAttribute(core.createNode({parent: defInputs, base: lib('Data')}), 'name', p));
        op.outputs.forEach(p => core.setAttribute(core.createNode({parent: defOutputs, base: lib('Data')}), 'name', p));
        const inst = core.createNode({parent: pipeline, base: def});
        core.setRegistry(inst, 'position', op.position);
        ports[name] = inst;
    }
    for (const [srcOp, srcPort, dstOp, dstPort] of EXAMPLE.connections) {
        const src = await findPort(core, ports[srcOp], 'Outputs', srcPort);
        const dst = await findPort(core, ports[dstOp], 'Inputs', dstPort);
        const conn = core.createNode({parent: pipeline, base: lib('Transporter')});
        core.setPointer(conn, 'src', src);
        core.setPointer(conn, 'dst', dst);
    }
}

async function portBox(core, operation, type) {
    const box = (await core.loadChildren(operation)).find(c => core.isTypeOf(c, type));
    if (!box) {
        throw new Error(`operation ${core.getAttribute(operation, 'name')} has no ${core.getAttribute(type, 'name')}`);
    }
    return box;
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

async function main(outFile, libraryFile) {
    const libraryJson = JSON.parse(new AdmZip(libraryFile).readAsText('project.json'));
    const logger = webgme.Logger.create('gme:seed:pipeline', gmeConfig.bin.log, false);
    const gmeAuth = await webgme.getGmeAuth(gmeConfig);
    const storage = webgme.getStorage(logger.fork('storage'), gmeConfig, gmeAuth);
    await storage.openDatabase();
    const projectName = 'pipelineSeedBuild' + Date.now();
    try {
        const project = await storage.createProject({projectName, username: gmeConfig.authentication.guestAccount});
        const core = new Core(project, {globConf: gmeConfig, logger: logger.fork('core')});

        // DeepForge's library with our additions, as a commit of its own in this project.
        const imported = await storageUtils.insertProjectJson(project, libraryJson,
            {commitMessage: `DeepForge's pipeline library (${path.basename(libraryFile)})`});
        const libRoot = await core.loadRoot(libraryJson.rootHash);
        extendLibrary(core, libRoot);
        const extended = core.persist(libRoot);
        const libCommit = await project.makeCommit(null, [imported.hash], extended.rootHash, extended.objects,
            'pipeline library: our documented additions');

        const emptySeed = path.join(path.dirname(require.resolve('webgme-engine')), 'seeds', 'EmptyProject.webgmex');
        const emptyJson = JSON.parse(new AdmZip(emptySeed).readAsText('project.json'));
        let result = await storageUtils.insertProjectJson(project, emptyJson, {commitMessage: 'empty project'});
        await project.createBranch('master', result.hash);

        const root = await core.loadRoot(emptyJson.rootHash);
        await core.addLibrary(root, LIBRARY, extended.rootHash,
            {projectId: LIBRARY_PROJECT_ID, branchName: 'master', commitHash: libCommit.hash});
        await build(core, root);
        const persisted = core.persist(root);
        result = await project.makeCommit('master', [result.hash], persisted.rootHash, persisted.objects,
            'DeepForge\'s pipeline library, the root containers of a DeepForge project and an example pipeline');
        if (result.status !== 'SYNCED') {
            throw new Error('commit not synced: ' + JSON.stringify(result));
        }
        const json = await storageUtils.getProjectJson(project, {branchName: 'master'});
        json.projectId = 'guest+pipeline';
        const zip = new AdmZip();
        zip.addFile('project.json', Buffer.from(JSON.stringify(json, null, 2), 'utf8'));
        fs.writeFileSync(outFile, zip.toBuffer());
        console.log(`wrote ${outFile}: ${json.objects.length} objects, root ${json.rootHash}, library from ${libraryFile}`);
    } finally {
        await storage.deleteProject({projectId: gmeConfig.authentication.guestAccount + '+' + projectName})
            .catch(() => null);
        await storage.closeDatabase();
        await gmeAuth.unload();
    }
}

main(process.argv[2] || path.join(__dirname, 'pipeline.webgmex'), findDeepForgeLibrary(process.argv[3]))
    .catch(err => {
        console.error(err);
        process.exit(1);
    });
