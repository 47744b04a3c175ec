from stylecap.experiments import something
