// A real HDFS (one NameNode, one DataNode) on loopback for the tests, from Hadoop's minicluster.
// Usage: java -cp <pyspark jars>:<hadoop-client-minicluster jar> MiniHdfs.java <base dir> <namenode port>
// Prints "READY hdfs://127.0.0.1:<port>" once the filesystem answers, and runs until stdin closes.

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class MiniHdfs {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, args[0]);
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.namenode.http-address", "127.0.0.1:0");
        conf.setBoolean("dfs.permissions.enabled", false);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
                .nameNodePort(Integer.parseInt(args[1]))
                .numDataNodes(1)
                .format(true)
                .build();
        cluster.waitActive();
        System.out.println("READY hdfs://127.0.0.1:" + cluster.getNameNodePort());
        System.out.flush();
        while (System.in.read() != -1) {
            // keep serving until the test closes our stdin (or kills us)
        }
        cluster.shutdown();
    }
}
