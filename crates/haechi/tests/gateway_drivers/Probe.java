// A JDBC client of the Haechi DB gateway, run by tests/gateway_drivers.rs with Java's
// single-file launcher (`java -cp DRIVER.jar Probe.java ...`) and Debian's PgJDBC and MariaDB
// Connector/J jars. It prints one line per step; the test checks them.
//
//   java -cp postgresql.jar Probe.java pg    JDBC_URL USER PASSWORD
//   java -cp mariadb.jar    Probe.java mysql JDBC_URL USER PASSWORD

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class Probe {
    public static void main(String[] args) throws Exception {
        String kind = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        try (Connection c = DriverManager.getConnection(args[1], props)) {
            System.out.println("connected " + kind);
            // A prepared statement executed more often than PgJDBC's prepareThreshold (5): the
            // first runs use the unnamed statement, the later ones a named server-side one.
            // Connector/J with useServerPrepStmts=true prepares with COM_STMT_PREPARE.
            try (PreparedStatement ps = c.prepareStatement("SELECT a, b FROM t WHERE a > ? ORDER BY a")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, i);
                    int rows = 0;
                    long sum = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows++;
                            sum += rs.getInt(1) + rs.getInt(2);
                        }
                    }
                    System.out.println("select " + i + " rows=" + rows + " sum=" + sum);
                }
            }
            // A write the policy does not grant: the protocol's own permission error.
            try (PreparedStatement ps = c.prepareStatement("DELETE FROM t WHERE a = ?")) {
                ps.setInt(1, 1);
                ps.executeUpdate();
                System.out.println("delete ran");
            } catch (SQLException e) {
                System.out.println("refused state=" + e.getSQLState() + " code=" + e.getErrorCode()
                        + " message=" + e.getMessage().replace('\n', ' '));
            }
            // The session is still usable, in a transaction too.
            c.setAutoCommit(false);
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM t")) {
                rs.next();
                System.out.println("after count=" + rs.getLong(1));
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT current_user")) {
                rs.next();
                System.out.println("current_user=" + rs.getString(1));
            }
        }
        System.out.println("closed");
    }
}
